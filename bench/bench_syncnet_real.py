"""Benchmark (not a CI test): a small StableSyncNet trained on real clips, held-out accuracy vs chance.

    .venv/bin/python bench/bench_syncnet_real.py [--work /tmp/bench_syncnet] [--budget-s 900]
        [--resolution 64] [--eval-samples 256] [--media ../shared/media]

1. Runs the data pipeline (``training.preprocess.run``: resample, shot, segment, affine at 256) on
   the three demo clips ``demo{1,2,3}_video.mp4`` (their own speech tracks; demo3 is 30 fps).
2. Trains a small StableSyncNet (``training/configs/tiny_syncnet.yaml``: 64x64 faces, 10.9 M
   parameters) on the segments of demo1 + demo2 for a fixed CPU time budget.
3. Reports its accuracy on the held-out demo3 segments (50 % in-sync / 50 % off-sync pairs from the
   same video, deterministic) against chance (50 %), the accuracy on the training clips, both also
   over every pair (``*_all_pairs``: every audio window against every frame window,
   :func:`training.eval.syncnet_acc.syncnet_accuracy_all_offsets`), and the loss curve. Writes
   everything to ``<work>/result.json`` and prints it.

Resumable: the pipeline skips finished items; training restarts from scratch each run unless
``--resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/bench_syncnet")
    ap.add_argument("--media", default=str(ROOT.parent / "shared" / "media"))
    ap.add_argument("--budget-s", type=float, default=900.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--eval-samples", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--preset", default="ultrafast", help="libx264 preset of the pipeline's clips")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from training.preprocess.common import Options
    from training.preprocess.run import run_pipeline

    work = Path(args.work)
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for i in (1, 2, 3):  # links, not copies; the pipeline never writes into raw/
        dst = raw / f"demo{i}.mp4"
        if not dst.exists():
            os.symlink(Path(args.media) / f"demo{i}_video.mp4", dst)
    t0 = time.time()
    summary = run_pipeline(raw, work / "data", ["resample", "shot", "segment", "affine"],
                           Options(resolution=256, preset=args.preset), verbose=True)
    t_pre = time.time() - t0
    final = Path(summary["final_dir"])
    clips = sorted(final.rglob("*.mp4"))
    train_list = [p for p in clips if not p.name.startswith("demo3")]
    held_list = [p for p in clips if p.name.startswith("demo3")]
    (work / "train.txt").write_text("".join(f"{p}\n" for p in train_list))
    (work / "held.txt").write_text("".join(f"{p}\n" for p in held_list))
    print(json.dumps({"pipeline_s": round(t_pre, 1), "train_clips": len(train_list),
                      "held_out_clips": len(held_list)}), flush=True)

    from training import engine
    from training.train_syncnet import main as train_main

    out = work / "run"
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    cfg = ROOT / "training" / "configs" / "tiny_syncnet.yaml"
    t1 = time.time()
    res = train_main(cfg, [f"data.train_fileslist={work / 'train.txt'}", f"data.val_fileslist={work / 'held.txt'}",
                           f"data.train_output_dir={out}", f"data.audio_mel_cache_dir={work / 'mel'}",
                           f"data.batch_size={args.batch_size}", "data.num_val_samples=128", "data.frame_cache_mb=2000",
                           "data.val_batch_size=16", "run.max_train_steps=1000000",
                           f"run.time_budget_s={args.budget_s}", "run.validation_steps=100",
                           "ckpt.save_ckpt_steps=1000000", f"optimizer.lr={args.lr}", "optimizer.lr_scheduler=constant",
                           "optimizer.lr_warmup_steps=0",
                           f"run.num_threads={args.threads}", "run.log_every=10",
                           f"run.resume_from={'latest' if args.resume else ''}"])
    t_train = time.time() - t1

    from omegaconf import OmegaConf

    from latentsync.checkpoints import load_syncnet
    from training.datasets.common import list_videos
    from training.datasets.syncnet import SyncNetDataset
    from training.eval.syncnet_acc import syncnet_accuracy_all_offsets, syncnet_accuracy_on

    model = load_syncnet(res["checkpoint"], OmegaConf.to_container(OmegaConf.load(cfg).model)).eval()
    mk = lambda lst: SyncNetDataset(list_videos(str(lst), ""), seed=123, resolution=64,  # noqa: E731
                                    audio_mel_cache_dir=str(work / "mel"), frame_cache_mb=2000)
    held_ds, train_ds = mk(work / "held.txt"), mk(work / "train.txt")  # each video decoded once for all scores
    held = syncnet_accuracy_on(model, held_ds, args.eval_samples, 16, seed=123)
    train_acc = syncnet_accuracy_on(model, train_ds, args.eval_samples, 16, seed=321)
    torch.manual_seed(0)
    from latentsync.models.syncnet import StableSyncNet

    untrained = StableSyncNet(OmegaConf.to_container(OmegaConf.load(cfg).model)).eval()
    base = syncnet_accuracy_on(untrained, held_ds, args.eval_samples, 16, seed=123)
    log = engine.read_jsonl(out / "log.jsonl")
    curve = [{"step": r["step"], "loss": round(r["loss"], 4), "acc": round(r["acc"], 3)}
             for r in log if r["event"] == "train"]
    vals = [{"step": r["step"], "loss": round(r["loss"], 4), "acc": round(r["acc"], 3)}
            for r in log if r["event"] == "val"]
    result = {
        "pipeline": {"seconds": round(t_pre, 1), "steps": [{k: s[k] for k in ("step", "ok", "filtered", "failed")}
                                                            for s in summary["steps"]],
                     "train_clips": [p.name for p in train_list], "held_out_clips": [p.name for p in held_list]},
        "training": {"seconds": round(t_train, 1), "steps": res["global_step"], "batch_size": args.batch_size,
                     "lr": args.lr, "threads": args.threads, "config": "training/configs/tiny_syncnet.yaml",
                     "num_skipped": res["num_skipped"]},
        "held_out_accuracy": held["accuracy"], "held_out": held, "chance": 0.5,
        "untrained_held_out_accuracy": base["accuracy"],
        "train_accuracy": train_acc["accuracy"],
        "held_out_all_pairs": syncnet_accuracy_all_offsets(model, held_ds),
        "train_all_pairs": syncnet_accuracy_all_offsets(model, train_ds),
        "loss_curve": curve, "val_curve": vals,
    }
    (work / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
