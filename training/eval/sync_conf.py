"""Sync-C / Sync-D and audio-visual offset of videos with a StableSyncNet (spec 5.1 adapted).

The official metric (LSE-C / LSE-D) uses the original SyncNet of Chung & Zisserman
(``syncnet_v2.model``) on S3FD face tracks; that network is not part of this project. This command
computes the **same statistic with StableSyncNet** on aligned faces: for each clip start ``s`` (every
``stride`` frames) the visual embedding of frames ``s .. s+15`` is compared with the audio embedding
of the mel window of frame ``s + o`` for offsets ``o = -K .. K``; distances are Euclidean between the
unit embeddings (0 .. sqrt 2), averaged over ``s``. **Sync-D = min over o of the mean distance;
Sync-C = median - min; offset = the o of the minimum** (positive: the audio lags the video by o frames).
Values are therefore *not* comparable with published LSE-C/LSE-D numbers.

    python -m training.eval.sync_conf --video out.mp4 [--video ...] --syncnet-checkpoint stable_syncnet.pt \\
        [--syncnet-config latentsync/configs/syncnet/syncnet_16_pixel_attn.yaml] [--aligned] [--max-offset 15]

``--aligned``: the videos already hold aligned faces (data-pipeline output); otherwise faces are
aligned first with :class:`latentsync.face.FaceAligner`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.eval.common import load_syncnet_from_config, print_json


@torch.no_grad()
def sync_scores(model: torch.nn.Module, faces: np.ndarray, mel: torch.Tensor, resolution: int,
                fps: float = 25.0, max_offset: int = 15, stride: int = 2, batch_size: int = 16,
                num_frames: int = 16) -> dict:
    """Sync statistics of one clip.

    Args:
        model: StableSyncNet. faces: uint8 ``[N, R', R', 3]`` aligned faces (resized to
            ``resolution``). mel: ``[80, T]`` SyncNet mel of the clip's audio (80 frames/s).

    Returns: ``{"sync_c", "sync_d", "offset", "dists": [2K+1 mean distances], "num_windows"}``.

    Raises:
        ValueError: clip too short for one window at every offset.
    """
    from training.datasets.common import frames_to_tensor, mel_window, usable_frames

    device = next(model.parameters()).device
    n_start = usable_frames(len(faces), mel.shape[-1], num_frames, fps)
    starts = list(range(max_offset, n_start - max_offset, stride))
    if not starts:
        raise ValueError(f"clip of {len(faces)} frames is too short for offsets +-{max_offset}")
    x = frames_to_tensor(faces, resolution)  # [N, 3, R, R]
    vis, aud = {}, {}
    a_starts = sorted({s + o for s in starts for o in range(-max_offset, max_offset + 1)})
    embed = lambda tower, t: F.normalize(tower(t.to(device)).flatten(1).float(), dim=1).cpu()  # noqa: E731
    for i in range(0, len(starts), batch_size):
        ss = starts[i:i + batch_size]
        v = torch.stack([x[s:s + num_frames].reshape(-1, resolution, resolution)[:, resolution // 2:] for s in ss])
        vis.update(zip(ss, embed(model.visual_encoder, v)))
    for i in range(0, len(a_starts), batch_size):
        ss = a_starts[i:i + batch_size]
        a = torch.stack([mel_window(mel, s, num_frames, fps) for s in ss])
        aud.update(zip(ss, embed(model.audio_encoder, a)))
    offsets = list(range(-max_offset, max_offset + 1))
    dists = []
    for o in offsets:
        d = torch.stack([torch.linalg.vector_norm(vis[s] - aud[s + o]) for s in starts])
        dists.append(float(d.mean()))
    dists_a = np.asarray(dists)
    k = int(np.argmin(dists_a))
    return {"sync_c": float(np.median(dists_a) - dists_a[k]), "sync_d": float(dists_a[k]),
            "offset": offsets[k], "dists": [round(d, 6) for d in dists], "num_windows": len(starts)}


def evaluate_video(model, resolution: int, path: str | Path, aligned: bool, max_offset: int = 15,
                   stride: int = 2) -> dict:
    """Read a video (+ its audio), align faces unless ``aligned``, and score it."""
    from latentsync.audio.mel import syncnet_mel_spectrogram
    from latentsync.video.io import read_audio, read_video

    frames, info = read_video(path)
    if not aligned:
        from latentsync.face.aligner import FaceAligner

        al = FaceAligner(256 if resolution <= 256 else 512, fps=float(info.fps), download=False)
        crops = al.align(frames)
        keep = [i for i in range(len(frames)) if i not in set(crops.no_face_indices)]
        frames = crops.faces.numpy()[keep] if len(keep) == len(frames) else crops.faces.numpy()
    mel = syncnet_mel_spectrogram(read_audio(path, 16000)).float()
    return sync_scores(model, frames, mel, resolution, float(info.fps), max_offset, stride)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.eval.sync_conf", description=__doc__.splitlines()[0])
    ap.add_argument("--video", action="append", required=True, help="video file (repeatable)")
    ap.add_argument("--syncnet-checkpoint", required=True)
    ap.add_argument("--syncnet-config", default=None)
    ap.add_argument("--aligned", action="store_true", help="videos are aligned faces already")
    ap.add_argument("--max-offset", type=int, default=15)
    ap.add_argument("--stride", type=int, default=2)
    args = ap.parse_args(argv)
    model, res = load_syncnet_from_config(args.syncnet_checkpoint, args.syncnet_config)
    per = {}
    for v in args.video:
        try:
            r = evaluate_video(model, res, v, args.aligned, args.max_offset, args.stride)
            r.pop("dists")
            per[v] = r
        except Exception as exc:  # report and continue with the other videos
            per[v] = {"error": f"{type(exc).__name__}: {exc}"}
    good = [r for r in per.values() if "error" not in r]
    out = {"metric": "StableSyncNet Sync-C/Sync-D (not LSE-C/LSE-D of SyncNet v2)",
           "sync_c": float(np.mean([r["sync_c"] for r in good])) if good else None,
           "sync_d": float(np.mean([r["sync_d"] for r in good])) if good else None,
           "num_videos": len(good), "videos": per}
    print_json(out)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
