"""mediapipe Tasks vs legacy face mesh: alignment anchors on the demo clips, before/after the
Tasks anchor correction (``TASKS_ANCHOR_MODEL`` + ``TasksSmoothingLead``), and its fit. Prints JSON.

Needs mediapipe 0.10.21 (the last release with both the legacy ``solutions.face_mesh`` and the Tasks
API), the demo clips and the real ``face_landmarker.task``. Each clip runs in tracking mode with both
backends (raw Tasks points, ``legacy_anchors=False``, single face: mediapipe's smoothed stream), as is
and mirrored left-right. Per clip: frames with a face for each backend, frames the legacy mesh finds
and Tasks misses, and the worst coordinate of the three anchors' difference per frame (sub-pixel
anchors; mean / p95 / max px) before and after the committed correction, raw and after the aligner's
One-Euro smoothing of both (``*_both_smoothed``). ``--fit`` clips give the refit correction (offsets
and pose model in face units, the lead's min cutoff and beta on a grid); the other clips are the
held-out test. ``leave_one_out`` refits on two clips and tests the third, for offsets alone, offsets +
lead, and offsets + lead + pose. Reference points for what is reachable: ``best_constant_in_sample``
(constant offsets fitted on that very run, no lead) and ``legacy_vs_own_mirror`` (the legacy mesh
against its own mirrored run, mirrored back, brows swapped).

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
    TASKS_ANCHOR_MODEL,
    TASKS_LEAD_MIN_CUTOFF,
    TASKS_SMOOTHING_BETA,
    MediaPipeFaceMesh,
    MediaPipeTasksLandmarker,
    TasksAnchorModel,
    TasksSmoothingLead,
    anchor_points,
    face_frame,
    pose_features,
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


LEAD_MIN_CUTOFFS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # Hz, the grid the lead's min cutoff is fitted on
BETAS = (20.0, 40.0, 80.0, 160.0, 320.0)  # refit on this grid too, to check it lands on mediapipe's


def leads(raw: np.ndarray, fps: float, lead: TasksSmoothingLead | None) -> np.ndarray:
    """``[N, 3, 2]`` pixel leads of a run's smoothed Tasks meshes (the landmarker's timestamps and
    restarts), zeros without ``lead`` or without a face."""
    out = np.zeros((len(raw), 3, 2))
    if lead is None:
        return out
    lead.reset()
    last_ts = -1
    for i, m in enumerate(raw):
        last_ts = max(int(round(i * 1000.0 / fps)), last_ts + 1)
        if np.isnan(m[0, 0]):
            lead.reset()
        else:
            out[i] = lead(m, last_ts)
    return out


def corrected(raw: np.ndarray, fps: float, model: TasksAnchorModel, lead: TasksSmoothingLead | None) -> np.ndarray:
    """Tasks meshes ``[N, K, 2]`` in the legacy convention, as the landmarker makes them."""
    out = np.full_like(raw, np.nan)
    for i, (m, shift) in enumerate(zip(raw, leads(raw, fps, lead))):
        if not np.isnan(m[0, 0]):
            out[i] = to_legacy_anchor_convention(m, shift, model=model)
    return out


RIDGE = 0.01  # ridge penalty of the pose gains, per frame, on standardised features


def fit_model(runs: list[dict], lead: TasksSmoothingLead | None, pose: bool = True) -> tuple[TasksAnchorModel, float]:
    """Least-squares offsets (and ridge pose gains on clipped, standardised pose features) of legacy -
    (Tasks + lead) anchors in the Tasks face frame over frames where both found the face. ``runs``:
    dicts with the meshes (``tv``), their anchors (``a_leg``, ``a_tv``), pose features (``pose``)
    and ``fps``; leads are cached in them. Returns ``(model, mean squared pixel residual)``."""
    face, scales, features = [], [], []
    for run in runs:
        key = None if lead is None else (lead.min_cutoff, lead.beta)
        if key not in run:
            run[key] = leads(run["tv"], run["fps"], lead)
        leg, raw = run["a_leg"], run["a_tv"]
        for i in np.nonzero(~np.isnan(leg[:, 0, 0]) & ~np.isnan(raw[:, 0, 0]))[0]:
            _, axes, scale = face_frame(raw[i])
            face.append(((leg[i] - raw[i] - run[key][i]) @ axes.T / scale).ravel())
            scales.append(scale)
            features.append(run["pose"][i])
    face, features = np.array(face), np.array(features)
    mean, spread = features.mean(axis=0), features.std(axis=0)
    model = TasksAnchorModel(np.zeros((3, 2)), mean, spread, np.zeros((6, features.shape[1])))
    z = np.clip((features - mean) / spread, -model.clip, model.clip)
    gains = np.zeros_like(model.pose_gains)
    if pose:
        centred = z - z.mean(axis=0)
        gains = np.linalg.solve(centred.T @ centred + RIDGE * len(z) * np.eye(z.shape[1]), centred.T @ face).T / spread
    pose_part = z * spread @ gains.T
    offsets = (face - pose_part).mean(axis=0)
    residual = face - pose_part - offsets
    model = TasksAnchorModel(offsets.reshape(3, 2), mean, spread, gains)
    return model, float(np.mean(np.sum(residual**2, axis=1) * np.array(scales) ** 2))


def fit(
    runs: list[dict], with_lead: bool = True, pose: bool = True
) -> tuple[TasksAnchorModel, TasksSmoothingLead | None]:
    """The correction (:func:`fit_model`), with the lead's min cutoff and beta on their grids."""
    if not with_lead:
        return fit_model(runs, None, pose)[0], None
    best = None
    for beta in BETAS:
        for min_cutoff in LEAD_MIN_CUTOFFS:
            lead = TasksSmoothingLead(min_cutoff=min_cutoff, beta=beta)
            model, residual = fit_model(runs, lead, pose)
            if best is None or residual < best[0]:
                best = (residual, model, lead)
    return best[1], best[2]


VARIANTS = {  # name: (with lead, with pose gains)
    "offsets_only": (False, False),
    "offsets_and_lead": (True, False),
    "offsets_lead_and_pose": (True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", default="demo1,demo2", help="clips the correction is (re)fitted on")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the raw meshes (npz)")
    args = parser.parse_args()
    task = SHARED / "models" / "mediapipe" / "face_landmarker.task"
    fit_clips = [c for c in args.fit.split(",") if c]
    t0 = time.time()
    report: dict = {"fit_clips": fit_clips, "test_clips": [c for c in CLIPS if c not in fit_clips], "clips": {}}
    runs = {}
    for clip in CLIPS:
        fps = _video_info(clip)[1]
        for mirror in (False, True):
            d = meshes(clip, mirror, task, args.cache)
            pose = np.stack([np.full(8, np.nan) if np.isnan(m[0, 0]) else pose_features(m) for m in d["tv"]])
            runs[clip, mirror] = {**d, "fps": fps, "a_leg": anchors(d["leg"]), "a_tv": anchors(d["tv"]), "pose": pose}
    committed = TASKS_ANCHOR_MODEL
    for (clip, mirror), run in runs.items():
        leg, raw, fps, a_leg, a_raw = run["leg"], run["tv"], run["fps"], run["a_leg"], run["a_tv"]
        found_leg, found_tasks = ~np.isnan(leg[:, 0, 0]), ~np.isnan(raw[:, 0, 0])
        a_fixed = anchors(corrected(raw, fps, committed, TasksSmoothingLead()))
        best = anchors(corrected(raw, fps, fit_model([run], None, pose=False)[0], None))
        report["clips"][f"{clip}{'_mirrored' if mirror else ''}"] = {
            "frames": int(len(leg)),
            "found_legacy": int(found_leg.sum()),
            "found_tasks": int(found_tasks.sum()),
            "legacy_found_tasks_missed": np.nonzero(found_leg & ~found_tasks)[0].tolist(),
            "before": stats(a_raw, a_leg),
            "after": stats(a_fixed, a_leg),
            "before_both_smoothed": stats(smoothed(a_raw, fps), smoothed(a_leg, fps)),
            "after_both_smoothed": stats(smoothed(a_fixed, fps), smoothed(a_leg, fps)),
            "best_constant_in_sample": stats(best, a_leg),
        }
    for clip in CLIPS:
        own = runs[clip, True]["a_leg"][:, [1, 0, 2]]
        own[..., 0] = _video_info(clip)[0] - own[..., 0]
        report["clips"][clip]["legacy_vs_own_mirror"] = stats(own, runs[clip, False]["a_leg"])
    if fit_clips:
        model, lead = fit([run for (clip, _), run in runs.items() if clip in fit_clips])
        report["refit"] = _correction(model, lead.min_cutoff, lead.beta)
    report["committed"] = _correction(committed, TASKS_LEAD_MIN_CUTOFF, TASKS_SMOOTHING_BETA)
    report["leave_one_out"] = {}
    for test in CLIPS:
        train = [run for (clip, _), run in runs.items() if clip != test]
        entry: dict = {}
        for name, (with_lead, pose) in VARIANTS.items():
            model, lead = fit(train, with_lead, pose)
            entry[name] = {} if lead is None else {"lead_min_cutoff_hz": lead.min_cutoff, "beta": lead.beta}
            for mirror in (False, True):
                run = runs[test, mirror]
                a_leg, fps = run["a_leg"], run["fps"]
                a_fixed = anchors(corrected(run["tv"], fps, model, lead))
                entry[name]["mirrored" if mirror else "original"] = {
                    "raw": stats(a_fixed, a_leg), "both_smoothed": stats(smoothed(a_fixed, fps), smoothed(a_leg, fps))}
        report["leave_one_out"][test] = entry
    report["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=1))


def _correction(model: TasksAnchorModel, min_cutoff: float, beta: float) -> dict:
    """JSON of a correction: offsets, pose mean and spread (4 decimals), pose gains (3), lead settings."""
    return {"offsets": model.offsets.round(4).tolist(), "pose_mean": model.pose_mean.round(4).tolist(),
            "pose_spread": model.pose_spread.round(4).tolist(), "pose_gains": model.pose_gains.round(3).tolist(),
            "lead_min_cutoff_hz": min_cutoff, "beta": beta}


def _video_info(clip: str) -> tuple[int, float]:
    """(width px, fps) of a demo clip."""
    with av.open(str(SHARED / "media" / f"{clip}_video.mp4")) as container:
        stream = container.streams.video[0]
        return int(stream.width), float(stream.average_rate)


if __name__ == "__main__":
    main()
