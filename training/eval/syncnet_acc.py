"""SyncNet accuracy on pipeline-processed clips (spec 5.2).

    python -m training.eval.syncnet_acc --data-dir VAL_DIR | --fileslist FILES.txt \\
        --syncnet-checkpoint stable_syncnet.pt [--syncnet-config CFG.yaml] [--num-samples 2048] \\
        [--batch-size 16] [--seed 0] [--all-pairs]

Samples come from :class:`training.datasets.syncnet.SyncNetDataset` (50 % in-sync, 50 % same-video
off-sync negatives, deterministic given ``--seed``); prediction = cosine > 0.5. Prints
``{"accuracy", "num_samples", "positives", "chance": 0.5, "mean_cos_pos", "mean_cos_neg", "num_skipped"}``.
``--all-pairs`` scores every audio window against every frame window of each video instead (the
same accuracy's expected value without sampling noise, with the off-sync accuracy per offset; see
:func:`syncnet_accuracy_all_offsets`).
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


#: ``|offset|`` bins (video frames) of :func:`syncnet_accuracy_all_offsets`'s off-sync breakdown.
OFFSET_BINS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, None))


@torch.no_grad()
def syncnet_accuracy_all_offsets(model: torch.nn.Module, dataset, batch_size: int = 32,
                                 lower_half: bool = True) -> dict:
    """The official accuracy's expected value, without sampling noise: every pair of one video.

    The official sampling (spec 3.2) draws a video, an audio window start ``s``, an off-sync start
    ``s' != s`` uniformly, and a 50/50 label. Here each video's every audio window is scored against
    its every frame window (cosine of ``model``'s embeddings, prediction ``cos > 0.5``), so
    ``accuracy = mean over videos of (0.5 * in-sync accuracy + 0.5 * off-sync accuracy over all
    s' != s)`` is that expectation. Cost: N audio and N visual embeddings per video (N starts), so it
    is cheap for short clips; the N x N cosines are compared, never stored per pair beyond one video.

    Args:
        model: a StableSyncNet, ``model(frames, audio) -> (unit visual, unit audio)`` (any device;
            eval mode is the caller's).
        dataset: :class:`training.datasets.syncnet.SyncNetDataset` over the held-out videos.

    Returns:
        ``{"accuracy", "in_sync_accuracy", "off_sync_accuracy", "off_sync_accuracy_by_offset"
        ({"1": .., "4-5": .., "21+": ..}, pooled over videos), "num_videos", "num_pairs",
        "skipped" (videos without two windows)}``; accuracies in [0, 1].
    """
    from training.datasets.common import SkipSample
    from training.datasets.syncnet import pack_syncnet_frames

    device = next(model.parameters()).device
    skipped, num_pairs, pos_sum, neg_sum = [], 0, 0.0, 0.0
    by_bin = {b: [0, 0] for b in OFFSET_BINS}  # correct, total
    for path in dataset.videos:
        try:
            n, frames_at, audio = dataset.all_clips(path)
        except SkipSample as exc:
            skipped.append(str(exc))
            continue
        v, a = [], []
        for i in range(0, n, batch_size):  # row s of both: the clip and the audio window starting at s
            clips = pack_syncnet_frames(torch.stack([frames_at(s) for s in range(i, min(i + batch_size, n))]), lower_half)
            vi, ai = model(clips.to(device), audio[i:i + batch_size].to(device))
            v.append(vi.float())
            a.append(ai.float())
        cos = torch.cat(a) @ torch.cat(v).T  # unit embeddings: [audio start, frames start]
        offset = (torch.arange(n)[None, :] - torch.arange(n)[:, None]).abs().to(cos.device)
        pred = cos > 0.5
        pos_sum += float(pred.diagonal().float().mean())
        neg_sum += float((~pred[offset > 0]).float().mean())
        num_pairs += n * n
        for lo, hi in OFFSET_BINS:
            sel = (offset >= lo) & (offset <= (hi if hi is not None else n))
            by_bin[(lo, hi)][0] += int((~pred[sel]).sum())
            by_bin[(lo, hi)][1] += int(sel.sum())
    num_videos = len(dataset.videos) - len(skipped)
    in_sync, off_sync = (pos_sum / num_videos, neg_sum / num_videos) if num_videos else (None, None)
    name = lambda lo, hi: str(lo) if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}")  # noqa: E731
    return {"accuracy": 0.5 * in_sync + 0.5 * off_sync if num_videos else None,
            "in_sync_accuracy": in_sync, "off_sync_accuracy": off_sync,
            "off_sync_accuracy_by_offset": {name(lo, hi): (c / t if t else None) for (lo, hi), (c, t) in by_bin.items()},
            "num_videos": num_videos, "num_pairs": num_pairs, "skipped": skipped}


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
    ap.add_argument("--all-pairs", action="store_true", help="score every pair of each video (no sampling)")
    args = ap.parse_args(argv)
    model, res = load_syncnet_from_config(args.syncnet_checkpoint, args.syncnet_config)
    ds = SyncNetDataset(list_videos(args.fileslist, args.data_dir), seed=args.seed, resolution=res,
                        audio_mel_cache_dir=args.mel_cache_dir or None)
    if args.all_pairs:
        out = syncnet_accuracy_all_offsets(model, ds, args.batch_size)
    else:
        out = syncnet_accuracy_on(model, ds, args.num_samples, args.batch_size, args.seed)
    out["num_videos"] = len(ds)
    print_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
