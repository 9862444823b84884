"""Speed of the whole lip-sync job: frames/s and seconds per stage over a settings grid, as JSON.

Each grid point runs the CLI's job (``LipSyncPipeline.from_weights`` + one call, as
``python -m latentsync infer`` does) in a child process, so that its CPU seconds and peak memory are
its own (``os.wait4``). Stages: decode, align, audio, encode_latents, denoise, decode_latents, paste,
encode_video (``LipSyncResult.stage_seconds``; with ``--overlap on`` they overlap, so they add up to
more than the wall time; ``--synchronize`` makes them exact on CUDA at the cost of the overlap).

Models:
  * ``--models tiny`` (default on CPU): the tiny random-weight files of ``--tiny-random``.
  * ``--models full`` (default on CUDA): **full-size random-weight** models, same compute as the real
    weights: the real LatentSync 1.6 / 1.5 U-Net config (``configs/unet/stage2_512.yaml`` /
    ``stage2.yaml``), the sd-vae-ft-mse AutoencoderKL config, and a Whisper with the real tiny encoder.

``--unet-step`` adds U-Net ms per 16-frame denoising step (batch 2 = CFG) at each resolution, the
FLOPs of one step counted with ``torch.utils.flop_counter`` on the same config, the achieved TFLOP/s
and, on CUDA, the fraction of the chip's dense bf16/fp16 peak (``--peak-tflops``, or a table by name).

Usage::

    # CPU, tiny models, the 10 s demo clip, DeepCache off/on x DDIM/DPM-Solver++
    nice -n 10 .venv/bin/python bench/bench_speed.py --out bench_cpu.json
    # CUDA, full-size random weights: the issue's points (512, 20 steps, guidance 1.5, DeepCache off/on,
    # fast mode 10 steps; 256 for comparison) and the U-Net step figures
    .venv/bin/python bench/bench_speed.py --device cuda --unet-step --out bench_cuda.json
    # any grid: every combination of the listed values
    .venv/bin/python bench/bench_speed.py --resolutions 256 512 --steps 20 --guidance 1.0 1.5 \\
        --deepcache off on --schedulers ddim dpmsolver++ --overlap on off
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MEDIA = Path(os.environ.get("LATENTSYNC_SHARED_DIR", REPO.parent / "shared")) / "media"

# Dense bf16/fp16 tensor-core peak, TFLOP/s (vendor datasheets, without sparsity).
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "RTX 4090": 165.2, "RTX 5090": 209.5}


def _flag(value: str) -> bool:
    return {"on": True, "off": False}[value]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--models", choices=("tiny", "full"), help="default: tiny on CPU, full on CUDA")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto")
    p.add_argument("--video", type=Path, default=MEDIA / "demo1_video.mp4", help="default: the 10 s demo clip")
    p.add_argument("--audio", type=Path, default=MEDIA / "demo1_audio.wav")
    p.add_argument("--resolutions", type=int, nargs="+")
    p.add_argument("--steps", type=int, nargs="+", help="DDIM steps (default: 4 on CPU, 20 on CUDA)")
    p.add_argument("--fast-steps", type=int, default=10, help="steps of the dpmsolver++ points (default 10)")
    p.add_argument("--guidance", type=float, nargs="+")
    p.add_argument("--deepcache", choices=("off", "on"), nargs="+")
    p.add_argument("--schedulers", choices=("ddim", "dpmsolver++"), nargs="+")
    p.add_argument("--overlap", choices=("off", "on"), nargs="+", default=["on"])
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net (CUDA)")
    p.add_argument("--synchronize", action="store_true", help="exact per-stage CUDA times (stops the overlap)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU")
    p.add_argument("--unet-step", action="store_true", help="also time one U-Net step per resolution")
    p.add_argument("--unet-only", action="store_true", help="only the U-Net step figures, no jobs")
    p.add_argument("--peak-tflops", type=float, help="the chip's dense bf16/fp16 peak (default: table by name)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--keep-outputs", type=Path, help="write each run's video into this folder (default: discarded)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def grid(args) -> list[dict]:
    """The settings of every run: the product of the listed values (defaults per device)."""
    cuda = args.device.startswith("cuda")
    if cuda and not any([args.resolutions, args.steps, args.guidance, args.deepcache, args.schedulers]):
        # the points: 512 at 20 steps / guidance 1.5 with DeepCache off and on, the fast mode, and 256
        base = {"guidance_scale": 1.5, "overlap": True}
        points = [dict(base, resolution=512, steps=20, deepcache=False, scheduler="ddim"),
                  dict(base, resolution=512, steps=20, deepcache=True, scheduler="ddim"),
                  dict(base, resolution=512, steps=args.fast_steps, deepcache=False, scheduler="dpmsolver++"),
                  dict(base, resolution=256, steps=20, deepcache=False, scheduler="ddim")]
        return [dict(p, overlap=_flag(o)) for o in args.overlap for p in points]
    points = []
    for res, steps, g, dc, sched, ov in itertools.product(
        args.resolutions or [256], args.steps or ([20] if cuda else [4]), args.guidance or [1.5],
        args.deepcache or ["off", "on"], args.schedulers or ["ddim", "dpmsolver++"], args.overlap,
    ):
        point = {"resolution": res, "steps": args.fast_steps if sched == "dpmsolver++" else steps,
                 "guidance_scale": g, "deepcache": _flag(dc), "scheduler": sched, "overlap": _flag(ov)}
        if point not in points:
            points.append(point)
    return points


# ------------------------------------------------------------------------------------------------
# child process: one job
# ------------------------------------------------------------------------------------------------


def _dtype(name: str, device):
    import torch

    from latentsync.device import default_device_and_dtype

    return default_device_and_dtype(device)[1] if name == "auto" else getattr(torch, name)


def _full_random_pipeline(resolution: int, device, dtype, **kwargs):
    """LipSyncPipeline with full-size random-weight models built on the device (compute as real)."""
    import torch
    from diffusers import AutoencoderKL

    from latentsync.config import unet_model_config
    from latentsync.models.tiny import build_tiny_whisper
    from latentsync.models.unet import UNet3DConditionModel
    from latentsync.pipeline.lipsync import LipSyncPipeline
    from latentsync.vae import SD_VAE_CONFIG

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet3DConditionModel.from_config(unet_model_config(resolution)).to(dtype).eval()
        vae = AutoencoderKL(**SD_VAE_CONFIG).to(dtype).eval()
    whisper = build_tiny_whisper().to(device)  # the real whisper-tiny encoder size
    return LipSyncPipeline(unet, vae, whisper, resolution=resolution, device=device, dtype=dtype, **kwargs)


def run_child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from latentsync.pipeline.lipsync import LipSyncPipeline

    device = torch.device(spec["device"])
    dtype = _dtype(spec["dtype"], device)
    kwargs = {"scheduler": spec["scheduler"], "compile": spec["compile"]}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        if spec["models"] == "full":
            pipe = _full_random_pipeline(spec["resolution"], device, dtype, **kwargs)
        else:
            from latentsync.models.tiny import write_tiny_checkpoint_dir
            from latentsync.weights import resolve_weights

            weights = resolve_weights(write_tiny_checkpoint_dir(Path(tmp) / "ckpt"), spec["resolution"], download=False)
            pipe = LipSyncPipeline.from_weights(weights, resolution=spec["resolution"], device=device, dtype=dtype,
                                                **kwargs)
        load_s = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cpu0 = time.process_time()
        output = Path(spec["keep"]) / f"{spec['tag']}.mp4" if spec["keep"] else Path(tmp) / "out.mp4"
        result = pipe(spec["video"], spec["audio"], output, num_inference_steps=spec["steps"],
                      guidance_scale=spec["guidance_scale"], deepcache=spec["deepcache"], overlap=spec["overlap"],
                      synchronize_timing=spec["synchronize"])
        job_cpu_s = time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"frames": result.num_frames, "fps_out": result.fps, "size": f"{result.width}x{result.height}",
           "job_s": round(result.elapsed_s, 2), "load_s": round(load_s, 2),
           "frames_per_s": round(result.num_frames / result.elapsed_s, 4), "job_cpu_s": round(job_cpu_s, 2),
           "process_cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "stage_seconds": {k: round(v, 2) for k, v in result.stage_seconds.items()},
           "dtype": str(dtype).replace("torch.", ""), "vae_batch_size": pipe.vae_batch_size}
    if device.type == "cuda":
        out["peak_vram_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        out["peak_vram_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    return out


# ------------------------------------------------------------------------------------------------
# U-Net step: ms, FLOPs, fraction of peak
# ------------------------------------------------------------------------------------------------


def unet_step(resolution: int, device, dtype, models: str, peak_tflops: float | None, iters: int) -> dict:
    """One CFG denoising step (batch 2, 16 frames) of the U-Net: time, FLOPs, TFLOP/s."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from latentsync.config import unet_model_config
    from latentsync.models.tiny import tiny_unet_config
    from latentsync.models.unet import UNet3DConditionModel

    cfg = unet_model_config(resolution) if models == "full" else tiny_unet_config()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet3DConditionModel.from_config(cfg).to(dtype).eval()
        h = resolution // 8
        x = torch.randn(2, 13, 16, h, h, dtype=dtype)
        ehs = torch.randn(2 * 16, 50, 384, dtype=dtype)
        t = torch.tensor(500)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            unet(x, t, ehs)
        flops = counter.get_total_flops()
        for _ in range(2 if device.type == "cuda" else 0):  # warm-up (cuDNN autotune, allocator)
            unet(x, t, ehs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            unet(x, t, ehs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - t0) / iters * 1000
    tflops = flops / (ms / 1000) / 1e12
    out = {"resolution": resolution, "models": models, "dtype": str(dtype).replace("torch.", ""),
           "batch": 2, "frames": 16, "ms_per_step": round(ms, 2), "gflop_per_step": round(flops / 1e9, 1),
           "achieved_tflops": round(tflops, 3)}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        out.update(device_name=name, peak_tflops=peak, fraction_of_peak=round(tflops / peak, 4) if peak else None)
    del unet
    return out


# ------------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------------


def _run_point(point: dict, args, models: str) -> dict:
    tag = "_".join(f"{k}-{v}" for k, v in point.items())
    spec = dict(point, device=args.device, models=models, dtype=args.dtype, compile=args.compile,
                synchronize=args.synchronize, threads=args.threads, video=str(args.video), audio=str(args.audio),
                keep=str(args.keep_outputs or ""), tag=tag)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    row = dict(point, wall_s=round(time.perf_counter() - t0, 2), exit_code=proc.returncode,
               output=str(args.keep_outputs / f"{tag}.mp4") if args.keep_outputs else None,
               load_avg_end=[round(x, 2) for x in os.getloadavg()])
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        row.update(json.loads(lines[-1]))
    else:
        row["stderr_tail"] = stderr[-2000:]
    return row


def main() -> int:
    args = build_parser().parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    import torch

    models = args.models or ("full" if args.device.startswith("cuda") else "tiny")
    report = {"settings": {"device": args.device, "models": models, "dtype": args.dtype, "video": str(args.video),
                           "audio": str(args.audio), "threads": args.threads, "compile": args.compile,
                           "synchronize": args.synchronize, "cpu_count": os.cpu_count(),
                           "python": platform.python_version(), "torch": torch.__version__,
                           "load_avg_start": [round(x, 2) for x in os.getloadavg()]},
              "runs": []}
    for point in [] if args.unet_only else grid(args):
        row = _run_point(point, args, models)
        report["runs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    if args.unet_step or args.unet_only:
        device = torch.device(args.device)
        dtype = _dtype(args.dtype, device)
        torch.set_num_threads(args.threads)
        report["unet_step"] = [unet_step(r, device, dtype, models, args.peak_tflops, 10 if device.type == "cuda" else 1)
                               for r in (args.resolutions or [256, 512])]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if all(r["exit_code"] == 0 for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
