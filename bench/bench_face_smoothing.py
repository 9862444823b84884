"""Benchmark: temporal smoothing of the face anchors, detection counts, face-stage speed.

Decodes a clip with PyAV (rgb24), runs mediapipe FaceMesh in tracking mode (one landmarker for the
whole clip) and in per-frame (static) mode, and prints one JSON object:

* ``detections``: frames with a face, tracking vs static (static = the official per-frame style).
* ``anchor_motion_px``: mean and 95th percentile of the frame-to-frame displacement of the three
  anchors (brow-L, brow-R, nose; Euclidean, averaged over the three), for the official rounded
  anchors, the raw sub-pixel anchors and the One-Euro-smoothed anchors (FaceAligner's default).
  Only pairs of consecutive frames that both have a face count.
* ``crop_change_upper_face``: the image measure that matters for the output - mean / p95 absolute
  frame-to-frame difference (grey levels) of the aligned 256 crop's rows 30-119 of 280 (brows,
  eyes, nose; above the mouth mask), for the three anchor variants. Lower = steadier crop.
* ``smoothing_lag_px``: mean / 95th percentile / max distance between smoothed and raw anchors
  (what the filter costs in accuracy).
* ``ms_per_frame`` (unless ``--no-timing``): FaceAligner.align and paste_back on the clip's first
  ``--timing-frames`` frames in chunks of 16, per resolution; wall and CPU (process) time.

Usage::

    .venv/bin/python bench/bench_face_smoothing.py [--video ../shared/media/demo1_video.mp4]
        [--max-frames 250] [--timing-frames 48] [--no-timing] [--no-static]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentsync.face.aligner import FaceAligner  # noqa: E402
from latentsync.face.alignment import OneEuroSmoother, crop_size, face_template, similarity_transform  # noqa: E402
from latentsync.face.landmarks import MediaPipeFaceMesh, anchor_points, create_landmarker  # noqa: E402
from latentsync.face.warp import warp_to_crops  # noqa: E402

DEFAULT_VIDEO = REPO.parent / "shared" / "media" / "demo1_video.mp4"


def decode(path: Path, max_frames: int) -> tuple[np.ndarray, float]:
    """First ``max_frames`` frames as uint8 ``[N, H, W, 3]`` RGB, and the stream's fps."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= max_frames:
                break
    return np.stack(frames), fps


def motion_stats(anchors: np.ndarray) -> dict:
    """Mean / p95 of the per-frame anchor displacement (px) over consecutive face frames."""
    step = np.linalg.norm(np.diff(anchors, axis=0), axis=2).mean(axis=1)  # [N-1], NaN across gaps
    step = step[np.isfinite(step)]
    return {
        "mean": round(float(step.mean()), 4),
        "p95": round(float(np.percentile(step, 95)), 4),
        "pairs": int(step.size),
    }


def track(frames: np.ndarray, fps: float) -> dict:
    """Anchors of every frame: official rounded, raw sub-pixel, One-Euro smoothed (NaN = no face)."""
    landmarker = create_landmarker(video_mode=True, fps=fps, download=False)
    smoother = OneEuroSmoother(fps=fps)
    n = frames.shape[0]
    out = {k: np.full((n, 3, 2), np.nan) for k in ("rounded", "raw", "smoothed")}
    t0 = time.perf_counter()
    for i in range(n):
        mesh = landmarker.detect(frames[i], i)
        if mesh is None:
            smoother.reset()
            continue
        out["rounded"][i] = anchor_points(mesh, rounded=True)
        out["raw"][i] = anchor_points(mesh, rounded=False)
        out["smoothed"][i] = smoother(out["raw"][i])
    out["ms_per_frame"] = (time.perf_counter() - t0) / n * 1000
    landmarker.close()
    return out


def crop_change(frames: np.ndarray, anchors: np.ndarray) -> dict:
    """Frame-to-frame change of the aligned upper face (grey levels) for one anchor sequence."""
    template = face_template(256)
    matrices = np.zeros((frames.shape[0], 2, 3), dtype=np.float32)
    bias = None
    for i, points in enumerate(anchors):
        if not np.all(np.isfinite(points)):
            bias = None
            continue
        matrix, bias = similarity_transform(points, template, bias)
        matrices[i] = matrix
    ok = [i for i in range(frames.shape[0]) if np.all(np.isfinite(anchors[i]))]
    crops = warp_to_crops(frames, matrices[ok], crop_size(256), indices=ok).float().numpy()[:, 30:120]
    pairs = [k for k in range(1, len(ok)) if ok[k] == ok[k - 1] + 1]
    diff = np.array([np.abs(crops[k] - crops[k - 1]).mean() for k in pairs])
    return {"mean": round(float(diff.mean()), 4), "p95": round(float(np.percentile(diff, 95)), 4)}


def static_detections(frames: np.ndarray) -> tuple[int, list[int], float]:
    landmarker = MediaPipeFaceMesh(static_image_mode=True)
    missed = []
    t0 = time.perf_counter()
    for i in range(frames.shape[0]):
        if landmarker.detect(frames[i], i) is None:
            missed.append(i)
    ms = (time.perf_counter() - t0) / frames.shape[0] * 1000
    landmarker.close()
    return frames.shape[0] - len(missed), missed, ms


def timing(frames: np.ndarray, resolution: int, chunk: int = 16) -> dict:
    """Wall and CPU ms/frame of align and paste_back (first chunk excluded as warm-up)."""
    aligner = FaceAligner(resolution)
    aligner.align(frames[:chunk], 0)
    rest = frames[chunk:]
    n = rest.shape[0]
    w0, c0 = time.perf_counter(), time.process_time()
    parts = [aligner.align(rest[s : s + chunk], chunk + s) for s in range(0, n, chunk)]
    w1, c1 = time.perf_counter(), time.process_time()
    for s, crops in zip(range(0, n, chunk), parts):
        aligner.paste_back(rest[s : s + chunk], crops.faces, crops)
    w2, c2 = time.perf_counter(), time.process_time()
    aligner.close()
    return {
        "frames": n,
        "align_wall": round((w1 - w0) / n * 1000, 2),
        "align_cpu": round((c1 - c0) / n * 1000, 2),
        "paste_wall": round((w2 - w1) / n * 1000, 2),
        "paste_cpu": round((c2 - c1) / n * 1000, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--max-frames", type=int, default=250)
    parser.add_argument("--timing-frames", type=int, default=48)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--no-static", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    frames, fps = decode(args.video, args.max_frames)
    tracked = track(frames, fps)
    lag = np.linalg.norm(tracked["smoothed"] - tracked["raw"], axis=2).mean(axis=1)
    lag = lag[np.isfinite(lag)]
    has_face = np.isfinite(tracked["raw"][:, 0, 0])
    result: dict = {
        "video": args.video.name,
        "frames": int(frames.shape[0]),
        "frame_size_hw": list(frames.shape[1:3]),
        "fps": fps,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "detections": {"tracking": int(has_face.sum()), "tracking_ms_per_frame": round(tracked["ms_per_frame"], 2)},
        "anchor_motion_px": {k: motion_stats(tracked[k]) for k in ("rounded", "raw", "smoothed")},
        "smoothing_lag_px": {
            "mean": round(float(lag.mean()), 4),
            "p95": round(float(np.percentile(lag, 95)), 4),
            "max": round(float(lag.max()), 4),
        },
    }
    result["crop_change_upper_face"] = {k: crop_change(frames, tracked[k]) for k in ("rounded", "raw", "smoothed")}
    c = result["crop_change_upper_face"]
    result["crop_change_reduction"] = {
        "vs_rounded": round(1 - c["smoothed"]["mean"] / c["rounded"]["mean"], 4),
        "vs_raw": round(1 - c["smoothed"]["mean"] / c["raw"]["mean"], 4),
    }
    m = result["anchor_motion_px"]
    result["motion_reduction"] = {
        "mean_vs_raw": round(1 - m["smoothed"]["mean"] / m["raw"]["mean"], 4),
        "mean_vs_rounded": round(1 - m["smoothed"]["mean"] / m["rounded"]["mean"], 4),
        "p95_vs_raw": round(1 - m["smoothed"]["p95"] / m["raw"]["p95"], 4),
    }
    if not args.no_static:
        count, missed, ms = static_detections(frames)
        result["detections"].update({"static": count, "static_missed": missed, "static_ms_per_frame": round(ms, 2)})
    if not args.no_timing:
        sub = frames[: max(args.timing_frames, 17)]
        result["ms_per_frame"] = {str(r): timing(sub, r) for r in (256, 512)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
