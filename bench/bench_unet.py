"""Time one forward pass of the LatentSync 3D U-Net and print one JSON object.

Two configurations, each measured in its own child process (so ``peak_rss_mb`` is per model):

* ``tiny``: the test fixture config (``tests/fixtures/tiny_unet_config.json``), input
  ``[2, 13, 16, 32, 32]`` (the parity input shape);
* ``full``: the LatentSync 1.6 config (1.27 B parameters, ~5.1 GB in fp32) at 32x32 latents
  (256 px), 16 frames, batch 2 (classifier-free guidance). **Slow on a CPU** (minutes on 2 cores) and
  needs ~8 GB of RAM in fp32; skip it with ``--skip-full``.

Weights are random (timing does not depend on their values). Usage::

    python bench/bench_unet.py                      # tiny + full, fp32, CPU
    python bench/bench_unet.py --skip-full          # tiny only
    python bench/bench_unet.py --device cuda --dtype fp16 --latent-size 64   # 512 px on a GPU

Output fields per run: ``config``, ``shapes`` (sample, encoder_hidden_states, output),
``parameters``, ``build_seconds``, ``seconds`` (best forward), ``forward_seconds`` (all timed
forwards), ``peak_rss_mb`` (process high-water mark, Linux ``ru_maxrss``) and, on CUDA,
``peak_cuda_mb``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_one(name: str, args: argparse.Namespace) -> dict:
    """Build one model and time its forward; runs inside a child process."""
    import torch

    from latentsync.models.unet import UNet3DConditionModel

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, DTYPES[args.dtype])
    device = torch.device(args.device)
    if name == "tiny":
        config = json.loads((REPO_ROOT / "tests" / "fixtures" / "tiny_unet_config.json").read_text())
        size = 32
    else:
        config = {}  # the defaults are the LatentSync 1.6 (stage2_512) model section
        size = args.latent_size
    batch, frames = 2, args.frames

    t0 = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet3DConditionModel.from_config(config).to(device=device, dtype=dtype).eval()
    build_seconds = time.perf_counter() - t0

    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, 13, frames, size, size, generator=gen).to(device, dtype)
    audio = torch.randn(batch * frames, 50, 384, generator=gen).to(device, dtype)
    timestep = torch.tensor(501, device=device)

    def forward() -> tuple[float, torch.Tensor]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = unet(sample, timestep, encoder_hidden_states=audio).sample
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    warmup = args.warmup if args.warmup is not None else (1 if name == "tiny" or device.type == "cuda" else 0)
    with torch.inference_mode():
        for _ in range(warmup):
            forward()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timings, out = [], None
        for _ in range(args.repeats):
            seconds, out = forward()
            timings.append(round(seconds, 4))

    result = {
        "config": name,
        "shapes": {
            "sample": list(sample.shape),
            "encoder_hidden_states": list(audio.shape),
            "output": list(out.shape),
        },
        "parameters": sum(p.numel() for p in unet.parameters()),
        "build_seconds": round(build_seconds, 3),
        "seconds": min(timings),
        "forward_seconds": timings,
        "warmup_forwards": warmup,
        "output_finite": bool(torch.isfinite(out).all()),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-full", action="store_true", help="only the tiny config (the full one is slow on CPU)")
    parser.add_argument("--only", choices=["tiny", "full"], help="run a single config")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--frames", type=int, default=16, help="frames per chunk (default 16)")
    parser.add_argument("--latent-size", type=int, default=32, help="full config latent H=W (32 = 256 px, 64 = 512 px)")
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards per config (default 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed forwards first (default: 1 tiny/cuda, 0 full on CPU)")
    parser.add_argument("--child", choices=["tiny", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_one(args.child, args)))
        return {}

    names = [args.only] if args.only else (["tiny"] if args.skip_full else ["tiny", "full"])
    if "full" in names and args.device == "cpu":
        warnings.warn(
            "the full 1.27 B-parameter U-Net forward in fp32 on a CPU takes minutes and ~8 GB RAM; "
            "use --skip-full to skip it",
            stacklevel=1,
        )
    passthrough = [f"--device={args.device}", f"--dtype={args.dtype}", f"--threads={args.threads}",
                   f"--frames={args.frames}", f"--latent-size={args.latent_size}", f"--repeats={args.repeats}"]  # fmt: skip
    if args.warmup is not None:
        passthrough.append(f"--warmup={args.warmup}")
    import torch

    report = {
        "benchmark": "unet_forward",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "runs": [],
    }
    for name in names:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), f"--child={name}", *passthrough],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            report["runs"].append({"config": name, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]})
            continue
        report["runs"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
