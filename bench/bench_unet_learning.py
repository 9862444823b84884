"""Benchmark (not a CI test): stage-1 U-Net training on one real clip lowers the loss; stage 2 uses a
SyncNet trained by the SyncNet loop.

    .venv/bin/python bench/bench_unet_learning.py --clip DATA/affine_transformed/.../demo1_000.mp4 \\
        [--work /tmp/bench_unet_learning] [--steps 300] [--eval-every 50] [--lr 3e-4] \\
        [--syncnet-checkpoint RUN/checkpoints/checkpoint-N.pt] [--stage2-steps 20]

Stage 1 (spec 3.5): ``training/configs/tiny_unet.yaml`` (64x64 faces, 8x8 latents; tiny random VAE
and Whisper built in memory) without temporal layers, whole U-Net trainable, noise-prediction loss
only, on one pipeline-processed clip (``--clip``). Every ``--eval-every`` steps (training resumes
exactly from the checkpoint in between) the U-Net is scored on fixed clips of that video with
fixed noise and timesteps ``--eval-timesteps``:

* ``recon``: MSE between predicted and true noise (the training loss);
* ``x0_psnr_mouth``: PSNR (dB, peak-to-peak 2 for [-1, 1]) of the one-step x0 estimate
  ``(x_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` decoded by the VAE, lower half of the face (the mouth
  region of the mask), against the ground-truth frames, and ``x0_psnr_mouth_vae`` against the
  VAE's own reconstruction of the ground truth (the best any latent can reach with this random
  VAE); ``latent_psnr_mouth``: the same on the latents (lower half, peak-to-peak 2).

Stage 2 (``--syncnet-checkpoint``, e.g. written by bench_syncnet_synthetic.py or
bench_syncnet_real.py): ``--stage2-steps`` steps of tiny_unet.yaml (temporal layers, recon + SyncNet
loss; LPIPS/TREPA off) with that checkpoint as the frozen SyncNet; the sync loss per step is
reported. Prints one JSON object (also ``<work>/result.json``) with CPU and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _psnr(a, b) -> float:
    import math

    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))


def x0_metrics(cfg, comp, unet, samples, timesteps, seed: int) -> dict:
    """Mean recon MSE and mouth-region PSNRs of the one-step x0 estimate (see module docstring)."""
    import torch

    from diffusers import DDIMScheduler

    from latentsync.config import scheduler_config
    from latentsync.vae import VAE_SCALING_FACTOR
    from training.datasets.common import collate_samples
    from training.losses import lower_half
    from training.train_unet import AudioFeatureCache, _audio_batch, _encode

    scheduler = DDIMScheduler.from_config(scheduler_config())
    vae, dev = comp["vae"], torch.device("cpu")
    cache = AudioFeatureCache(comp["whisper"], cfg.data.audio_embeds_cache_dir or None, int(cfg.data.audio_sample_rate))
    acc = {"recon": [], "x0_psnr_mouth": [], "x0_psnr_mouth_vae": [], "latent_psnr_mouth": []}
    unet.eval()
    with torch.no_grad():
        for i, sample in enumerate(samples):
            batch = collate_samples([sample])
            audio = _audio_batch(cache, batch, int(cfg.data.num_frames), float(cfg.data.video_fps), dev)
            g = torch.Generator().manual_seed(seed + i)
            gt = batch["gt"]
            b, f = gt.shape[:2]
            z = _encode(vae, gt, g, 16)
            masked, ref = _encode(vae, batch["masked"], g, 16), _encode(vae, batch["ref"], g, 16)
            h, w = z.shape[-2:]
            m = torch.nn.functional.interpolate(batch["masks"].reshape(b * f, 1, *batch["masks"].shape[-2:]),
                                                size=(h, w)).reshape(b, f, 1, h, w).permute(0, 2, 1, 3, 4)
            gt_flat = gt.reshape(b * f, *gt.shape[2:])
            vae_rec = vae.decode(z.permute(0, 2, 1, 3, 4).reshape(b * f, 4, h, w) / VAE_SCALING_FACTOR).sample
            for t_int in timesteps:
                noise = torch.randn(z.shape, generator=g)
                t = torch.tensor([t_int])
                a_t = scheduler.alphas_cumprod[t].float().view(1, 1, 1, 1, 1)
                x_t = a_t.sqrt() * z + (1 - a_t).sqrt() * noise
                eps = unet(torch.cat([x_t, m, masked, ref], 1), t, encoder_hidden_states=audio).sample.float()
                z0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
                pred = vae.decode(z0.permute(0, 2, 1, 3, 4).reshape(b * f, 4, h, w) / VAE_SCALING_FACTOR).sample
                acc["recon"].append(float(((eps - noise) ** 2).mean()))
                acc["x0_psnr_mouth"].append(_psnr(lower_half(pred).clamp(-1, 1), lower_half(gt_flat)))
                acc["x0_psnr_mouth_vae"].append(_psnr(lower_half(pred), lower_half(vae_rec)))
                acc["latent_psnr_mouth"].append(_psnr(lower_half(z0), lower_half(z)))
    unet.train()
    return {k: round(sum(v) / len(v), 4) for k, v in acc.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", required=True, help="one pipeline-processed clip (.mp4)")
    ap.add_argument("--work", default="/tmp/bench_unet_learning")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-clips", type=int, default=2)
    ap.add_argument("--eval-timesteps", default="200,500,800")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--syncnet-checkpoint", default="")
    ap.add_argument("--syncnet-config", default=str(ROOT / "training" / "configs" / "tiny_syncnet.yaml"))
    ap.add_argument("--stage2-steps", type=int, default=20)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0, c0 = time.time(), _cpu_seconds()

    from training import engine
    from training.datasets.common import list_videos
    from training.datasets.unet import UNetDataset, load_mask_image
    from training.train_unet import _as_config, build_components
    from training.train_unet import main as train_main

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    (work / "data" / "clip.mp4").symlink_to(Path(args.clip).resolve())
    cfg_path = ROOT / "training" / "configs" / "tiny_unet.yaml"
    common = [f"data.train_data_dir={work / 'data'}", f"data.audio_embeds_cache_dir={work / 'embeds'}",
              f"optimizer.lr={args.lr}", f"run.num_threads={args.threads}", "run.validation_steps=0",
              "run.log_every=1"]
    stage1 = common + [f"data.train_output_dir={work / 'stage1'}", "model.use_motion_module=false",
                       "run.pixel_space_supervise=false", "run.use_syncnet=false",
                       "run.perceptual_loss_weight=0", "run.trepa_loss_weight=0", "run.sync_loss_weight=0"]
    cfg = _as_config(cfg_path, stage1)
    comp = build_components(cfg, engine.DistEnv(), engine.JsonlLogger(work / "eval_log.jsonl", enabled=False))
    res = int(cfg.data.resolution)
    ds = UNetDataset(list_videos("", str(work / "data")), 777, load_mask_image(cfg.data.mask_image_path, res), res,
                     int(cfg.data.num_frames))
    samples = [ds[(0, 1000 + i)] for i in range(args.eval_clips)]
    timesteps = [int(t) for t in args.eval_timesteps.split(",")]

    curve = [{"step": 0, **x0_metrics(cfg, comp, comp["unet"], samples, timesteps, 5)}]
    print(json.dumps(curve[-1]), flush=True)
    for target in range(args.eval_every, args.steps + 1, args.eval_every):
        out = train_main(cfg_path, stage1 + [f"run.max_train_steps={target}", f"ckpt.save_ckpt_steps={args.eval_every}",
                                             f"run.resume_from={'latest' if target > args.eval_every else ''}"])
        sd = torch.load(out["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
        comp["unet"].load_state_dict(sd)
        curve.append({"step": target, **x0_metrics(cfg, comp, comp["unet"], samples, timesteps, 5)})
        print(json.dumps(curve[-1]), flush=True)
    log = engine.read_jsonl(work / "stage1" / "log.jsonl")
    train = [r["recon"] for r in log if r["event"] == "train"]
    k = args.eval_every
    train_curve = [{"steps": f"{i + 1}-{i + k}", "recon_mean": round(sum(train[i:i + k]) / k, 4)}
                   for i in range(0, len(train) - k + 1, k)]
    t1, c1 = time.time() - t0, _cpu_seconds() - c0

    stage2 = None
    if args.syncnet_checkpoint:
        out2 = train_main(cfg_path, common + [
            f"data.train_output_dir={work / 'stage2'}", f"ckpt.syncnet_ckpt_path={args.syncnet_checkpoint}",
            f"data.syncnet_config_path={args.syncnet_config}", "run.perceptual_loss_weight=0",
            "run.trepa_loss_weight=0", f"run.max_train_steps={args.stage2_steps}",
            f"ckpt.save_ckpt_steps={args.stage2_steps}"])
        stage2 = {"syncnet_checkpoint": args.syncnet_checkpoint, "steps": out2["global_step"],
                  "sync_loss": [round(c["sync"], 4) for c in out2["components"]],
                  "recon": [round(c["recon"], 4) for c in out2["components"]]}
    result = {
        "clip": str(args.clip), "config": "training/configs/tiny_unet.yaml (stage 1: no temporal layers, recon only)",
        "steps": args.steps, "lr": args.lr, "threads": args.threads, "eval_timesteps": timesteps,
        "eval_curve": curve, "train_recon_curve": train_curve,
        "stage1_cpu_seconds": round(c1, 1), "stage1_wall_seconds": round(t1, 1),
        "stage2": stage2, "cpu_seconds_total": round(_cpu_seconds() - c0, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    (work / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
