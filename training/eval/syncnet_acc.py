"""SyncNet accuracy on pipeline-processed clips (spec 5.2).

    python -m training.eval.syncnet_acc --data-dir VAL_DIR | --fileslist FILES.txt \\
        --syncnet-checkpoint stable_syncnet.pt [--syncnet-config CFG.yaml] [--num-samples 2048] \\
        [--batch-size 16] [--seed 0]

Samples come from :class:`training.datasets.syncnet.SyncNetDataset` (50 % in-sync, 50 % same-video
off-sync negatives, deterministic given ``--seed``); prediction = cosine > 0.5. Prints
``{"accuracy", "num_samples", "positives", "chance": 0.5, "mean_cos_pos", "mean_cos_neg", "num_skipped"}``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch
import torch.nn.functional as F

from training.eval.common import load_syncnet_from_config, print_json


@torch.no_grad()
def syncnet_accuracy_on(model: torch.nn.Module, dataset, num_samples: int, batch_size: int = 16,
                        seed: int = 0, lower_half: bool = True) -> dict:
    """Accuracy of ``model`` on ``num_samples`` deterministic samples of ``dataset``."""
    from training.datasets.common import collate_samples
    from training.datasets.syncnet import pack_syncnet_frames
    from training.engine import batch_keys

    device = next(model.parameters()).device
    correct = n = pos = skipped = 0
    cos_pos, cos_neg = [], []
    for b in range(-(-num_samples // batch_size)):
        keys = batch_keys(b, 0, 1, min(batch_size, num_samples - b * batch_size), len(dataset), seed)
        batch = collate_samples([dataset[k] for k in keys])
        v, a = model(pack_syncnet_frames(batch["frames"], lower_half).to(device), batch["audio"].to(device))
        cos = F.cosine_similarity(v.float(), a.float(), dim=1).cpu()
        y = batch["y"].float()
        correct += int(((cos > 0.5).float() == y).sum())
        n += len(y)
        pos += int(y.sum())
        skipped += batch["num_skipped"]
        cos_pos += cos[y == 1].tolist()
        cos_neg += cos[y == 0].tolist()
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"accuracy": correct / n, "num_samples": n, "positives": pos, "chance": 0.5,
            "mean_cos_pos": mean(cos_pos), "mean_cos_neg": mean(cos_neg), "num_skipped": skipped}


def main(argv: Sequence[str] | None = None) -> int:
    from training.datasets.common import list_videos
    from training.datasets.syncnet import SyncNetDataset

    ap = argparse.ArgumentParser(prog="python -m training.eval.syncnet_acc", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--fileslist", default="")
    ap.add_argument("--syncnet-checkpoint", required=True)
    ap.add_argument("--syncnet-config", default=None)
    ap.add_argument("--num-samples", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mel-cache-dir", default="")
    args = ap.parse_args(argv)
    model, res = load_syncnet_from_config(args.syncnet_checkpoint, args.syncnet_config)
    ds = SyncNetDataset(list_videos(args.fileslist, args.data_dir), seed=args.seed, resolution=res,
                        audio_mel_cache_dir=args.mel_cache_dir or None)
    out = syncnet_accuracy_on(model, ds, args.num_samples, args.batch_size, args.seed)
    out["num_videos"] = len(ds)
    print_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
