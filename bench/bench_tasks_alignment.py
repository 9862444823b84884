"""mediapipe Tasks vs legacy face mesh: alignment anchors on the demo clips, before/after the
Tasks anchor correction (``TASKS_ANCHOR_OFFSETS``), and its fit. Prints JSON.

Needs mediapipe 0.10.21 (the last release with both the legacy ``solutions.face_mesh`` and the Tasks
API), the demo clips and the real ``face_landmarker.task``. Each clip runs in tracking mode with both
backends (raw Tasks points, ``legacy_anchors=False``), as is and mirrored left-right. Per clip:
frames with a face for each backend, frames the legacy mesh finds and Tasks misses, and the worst
coordinate of the three anchors' difference per frame (sub-pixel anchors; mean / p95 / max px)
before and after the committed correction. ``--fit`` clips give the refit offsets (face units);
the other clips are the held-out test. ``legacy_vs_own_mirror`` is the legacy mesh against its own
mirrored run (mirrored back, brows swapped): how consistent the reference itself is.

    python bench/bench_tasks_alignment.py [--fit demo1,demo2] [--cache /tmp/meshes]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentsync.face.alignment import OneEuroSmoother  # noqa: E402
from latentsync.face.landmarks import (  # noqa: E402
    TASKS_ANCHOR_OFFSETS,
    MediaPipeFaceMesh,
    MediaPipeTasksLandmarker,
    anchor_points,
    face_frame,
    to_legacy_anchor_convention,
)

SHARED = Path(os.environ.get("LATENTSYNC_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
CLIPS = ("demo1", "demo2", "demo3")


def meshes(clip: str, mirror: bool, task: Path, cache: Path | None) -> dict[str, np.ndarray]:
    """Raw meshes ``{"leg": [N, 468, 2], "tv": [N, 478, 2]}`` (NaN = no face), cached as npz."""
    name = f"mesh_{clip}_{'m' if mirror else 'o'}.npz"
    if cache is not None and (cache / name).is_file():
        with np.load(cache / name) as d:
            return {"leg": d["leg"], "tv": d["tv"]}
    path = SHARED / "media" / f"{clip}_video.mp4"
    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate)
        legacy = MediaPipeFaceMesh(static_image_mode=False)
        tasks = MediaPipeTasksLandmarker(task, video_mode=True, fps=fps, legacy_anchors=False)
        out: dict[str, list] = {"leg": [], "tv": []}
        for i, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            rgb = np.ascontiguousarray(rgb[:, ::-1]) if mirror else rgb
            for key, lm, n in (("leg", legacy, 468), ("tv", tasks, 478)):
                m = lm.detect(rgb, i)
                out[key].append(np.full((n, 2), np.nan) if m is None else m)
        legacy.close()
        tasks.close()
    arrays = {k: np.stack(v) for k, v in out.items()}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache / name, **arrays)
    return arrays


def anchors(mesh: np.ndarray) -> np.ndarray:
    """``[N, 3, 2]`` sub-pixel anchors, NaN where no face."""
    return np.stack([np.full((3, 2), np.nan) if np.isnan(m[0, 0]) else anchor_points(m, rounded=False) for m in mesh])


def smoothed(a: np.ndarray, fps: float) -> np.ndarray:
    """The aligner's default temporal smoothing (One-Euro, restarted after a frame without a face)."""
    smoother, out = OneEuroSmoother(fps=fps), np.full_like(a, np.nan)
    for i, points in enumerate(a):
        if np.isnan(points[0, 0]):
            smoother.reset()
        else:
            out[i] = smoother(points)
    return out


def stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    worst = np.abs(a - b).max(axis=(1, 2))
    worst = worst[~np.isnan(worst)]
    return {"mean_px": round(float(worst.mean()), 2), "p95_px": round(float(np.percentile(worst, 95)), 2),
            "max_px": round(float(worst.max()), 2), "frames": int(worst.size)}


def face_offsets(leg: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Per frame (both found): legacy - Tasks anchors in the Tasks face frame, ``[M, 3, 2]``."""
    out = []
    for lm, tm in zip(leg, tasks):
        if np.isnan(lm[0, 0]) or np.isnan(tm[0, 0]):
            continue
        t = anchor_points(tm, rounded=False)
        _, axes, scale = face_frame(t)
        out.append((anchor_points(lm, rounded=False) - t) @ axes.T / scale)
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", default="demo1,demo2", help="clips the offsets are (re)fitted on")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the raw meshes (npz)")
    args = parser.parse_args()
    task = SHARED / "models" / "mediapipe" / "face_landmarker.task"
    fit_clips = [c for c in args.fit.split(",") if c]
    t0 = time.time()
    report: dict = {"fit_clips": fit_clips, "test_clips": [c for c in CLIPS if c not in fit_clips], "clips": {}}
    fit_rows = []
    for clip in CLIPS:
        runs = {mirror: meshes(clip, mirror, task, args.cache) for mirror in (False, True)}
        for mirror, d in runs.items():
            leg, raw = d["leg"], d["tv"]
            fixed = np.stack([m if np.isnan(m[0, 0]) else to_legacy_anchor_convention(m) for m in raw])
            found_leg, found_tasks = ~np.isnan(leg[:, 0, 0]), ~np.isnan(raw[:, 0, 0])
            a_leg, a_fixed, fps = anchors(leg), anchors(fixed), _video_info(clip)[1]
            report["clips"][f"{clip}{'_mirrored' if mirror else ''}"] = {
                "frames": int(len(leg)),
                "found_legacy": int(found_leg.sum()),
                "found_tasks": int(found_tasks.sum()),
                "legacy_found_tasks_missed": np.nonzero(found_leg & ~found_tasks)[0].tolist(),
                "before": stats(anchors(raw), a_leg),
                "after": stats(a_fixed, a_leg),
                "after_both_smoothed": stats(smoothed(a_fixed, fps), smoothed(a_leg, fps)),
            }
            if clip in fit_clips:
                fit_rows.append(face_offsets(leg, raw))
        own = anchors(runs[True]["leg"])[:, [1, 0, 2]]
        own[..., 0] = _video_info(clip)[0] - own[..., 0]
        report["clips"][clip]["legacy_vs_own_mirror"] = stats(own, anchors(runs[False]["leg"]))
    if fit_rows:
        report["refit_offsets"] = np.concatenate(fit_rows).mean(axis=0).round(4).tolist()
    report["committed_offsets"] = TASKS_ANCHOR_OFFSETS.round(4).tolist()
    report["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=1))


def _video_info(clip: str) -> tuple[int, float]:
    """(width px, fps) of a demo clip."""
    with av.open(str(SHARED / "media" / f"{clip}_video.mp4")) as container:
        stream = container.streams.video[0]
        return int(stream.width), float(stream.average_rate)


if __name__ == "__main__":
    main()
