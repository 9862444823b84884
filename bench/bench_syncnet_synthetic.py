"""Benchmark (not a CI test): the tiny StableSyncNet learns synchronisation on synthetic clips.

    .venv/bin/python bench/bench_syncnet_synthetic.py [--work /tmp/bench_syncnet_synth] [--steps 1800]
        [--budget-s 1200] [--train-clips 64] [--batch-size 16] [--threads 2]
        [--eval-every 100] [--eval-samples 2048]

1. Writes ``--train-clips`` training and ``--held-clips`` held-out clips with
   :func:`training.synthetic.make_dataset` (64x64 faces whose mouth opening follows the loudness
   of the audio; the held-out clips have other seeds: other faces, voices and envelopes).
2. Trains ``training/configs/tiny_syncnet.yaml`` (its recipe: lr 1e-4 after a 300-step warm-up,
   cosine decay to 0 at ``--steps``) for ``--steps`` steps or ``--budget-s`` seconds of training,
   whichever comes first (extra ``key=value`` arguments override the config, e.g.
   ``data.paired_negatives=false``; see training/README.md). The task is the official one:
   16-frame windows, lower half of the face, mel ``[1, 80, 52]``, negatives from the same clip at
   another offset.
3. Validates on the held-out clips every ``--eval-every`` steps (official accuracy: 50 % in-sync,
   50 % off-sync pairs, cos > 0.5, on ``--val-samples`` sampled pairs); at the end scores **every**
   pair of the held-out clips (every audio window against every frame window,
   :func:`training.eval.syncnet_acc.syncnet_accuracy_all_offsets`: the official accuracy's expected
   value without sampling noise, with the off-sync accuracy per offset), and ``--eval-samples``
   sampled pairs of the held-out and of the training clips.

Prints one JSON object (also written to ``<work>/result.json``): the validation curve, the
training curve (means over ``--eval-every`` steps), the first step with held-out accuracy >= 0.9,
the final held-out accuracy (``held_out_accuracy``: all pairs; ``held_out_sampled``), the training
accuracy, process CPU seconds, wall seconds, threads and the
load average before and after (the machine may be shared: CPU seconds are the comparable figure).
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/bench_syncnet_synth")
    ap.add_argument("--config", default=str(ROOT / "training" / "configs" / "tiny_syncnet.yaml"))
    ap.add_argument("--train-clips", type=int, default=64)
    ap.add_argument("--held-clips", type=int, default=3)
    ap.add_argument("--frames", type=int, default=100, help="frames per synthetic clip (25 fps)")
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--budget-s", type=float, default=1200.0, help="training time budget (wall seconds)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-samples", type=int, default=256, help="held-out pairs per curve point")
    ap.add_argument("--eval-samples", type=int, default=2048, help="sampled pairs at the end")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("overrides", nargs="*", help="extra config overrides key=value")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0, c0 = time.time(), _cpu_seconds()

    from training import engine
    from training.synthetic import make_dataset
    from training.train_syncnet import main as train_main

    work = Path(args.work)
    train_dir, held_dir = work / "train", work / "held"
    for d, n, seed in ((train_dir, args.train_clips, 0), (held_dir, args.held_clips, 1000)):
        if not d.is_dir() or len(list(d.glob("*.mp4"))) != n:
            shutil.rmtree(d, ignore_errors=True)
            make_dataset(d, num_videos=n, num_frames=args.frames, resolution=64, seed=seed)
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    res = train_main(args.config, [
        f"data.train_data_dir={train_dir}", f"data.val_data_dir={held_dir}", f"data.train_output_dir={out}",
        f"data.audio_mel_cache_dir={work / 'mel'}", "data.frame_cache_mb=1000",
        f"data.batch_size={args.batch_size}", f"data.num_val_samples={args.val_samples}", "data.val_batch_size=32",
        f"run.max_train_steps={args.steps}", f"run.validation_steps={args.eval_every}",
        f"ckpt.save_ckpt_steps={args.steps}", f"run.time_budget_s={args.budget_s}", f"run.num_threads={args.threads}", f"run.seed={args.seed}",
        "run.log_every=1", *args.overrides])
    t_train, c_train = time.time() - t0, _cpu_seconds() - c0

    from omegaconf import OmegaConf

    from latentsync.checkpoints import load_syncnet
    from training.datasets.common import list_videos
    from training.datasets.syncnet import SyncNetDataset
    from training.eval.syncnet_acc import syncnet_accuracy_all_offsets, syncnet_accuracy_on

    model = load_syncnet(res["checkpoint"], OmegaConf.to_container(OmegaConf.load(args.config).model)).eval()
    mk = lambda d: SyncNetDataset(list_videos("", str(d)), seed=123, resolution=64,  # noqa: E731
                                  audio_mel_cache_dir=str(work / "mel"), frame_cache_mb=1000)
    held_ds = mk(held_dir)  # one dataset (and frame cache) for both held-out scores
    held_all = syncnet_accuracy_all_offsets(model, held_ds)
    held = syncnet_accuracy_on(model, held_ds, args.eval_samples, 32, seed=123)
    train_acc = syncnet_accuracy_on(model, mk(train_dir), args.eval_samples, 32, seed=321)

    log = engine.read_jsonl(out / "log.jsonl")
    train = [r for r in log if r["event"] == "train"]
    k = args.eval_every
    curve = [{"step": train[i + k - 1]["step"],
              "loss": round(sum(r["loss"] for r in train[i:i + k]) / k, 4),
              "acc": round(sum(r["acc"] for r in train[i:i + k]) / k, 3)}
             for i in range(0, len(train) - k + 1, k)]
    vals = [{"step": r["step"], "acc": round(r["acc"], 3), "bce": round(r["loss"], 4)}
            for r in log if r["event"] == "val"]
    first90 = next((v["step"] for v in vals if v["acc"] >= 0.9), None)
    result = {
        "config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_relative_to(ROOT) else args.config,
        "train_clips": args.train_clips, "held_out_clips": args.held_clips, "frames_per_clip": args.frames,
        "steps": res["global_step"], "batch_size": args.batch_size, "overrides": args.overrides, "threads": args.threads,
        "held_out_accuracy": round(held_all["accuracy"], 4), "held_out_all_pairs": held_all,
        "held_out_sampled": held,
        "train_accuracy": round(train_acc["accuracy"], 4), "chance": 0.5,
        "first_step_held_out_acc_ge_0.9": first90,
        "cpu_seconds": round(c_train, 1), "wall_seconds": round(t_train, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "val_curve": vals, "train_curve": curve,
    }
    (work / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
