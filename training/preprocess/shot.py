"""Step ``shot`` (spec 4 step 3): split videos at shot boundaries into ``<name>_shot_<n>.mp4``.

Detectors (same interface: ``detect(frames uint8 [N, H, W, 3], fps) -> list[(start, end)]``):

* ``scenedetect``: PySceneDetect's ``AdaptiveDetector`` (the official CLI uses
  ``detect-adaptive --threshold 2``), used when the optional package is importable;
* ``histogram``: our fallback, always available: per frame a 3-D HSV histogram (8x4x4 bins) of a
  64x64 thumbnail; a cut where ``1 - correlation(h_t, h_{t-1})`` exceeds ``threshold`` (0.35) and is
  at least 3x the median difference of the previous second (adaptive, like AdaptiveDetector).

Shots shorter than ``min_shot_seconds`` are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.preprocess.common import Filtered, Options, probe_clip, write_ranges

FOLDER = "shot"


def histogram_shots(frames, fps: float, threshold: float = 0.35) -> list[tuple[int, int]]:
    """Shot ranges ``[(start, end_exclusive), ...]`` covering all frames (histogram detector).

    ``frames``: uint8 ``[N, H, W, 3]`` or any iterable of ``[H, W, 3]`` frames (streamed).
    """
    import cv2

    hists = []
    for f in frames:
        small = cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        h = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
        hists.append(h / max(h.sum(), 1.0))
    n = len(hists)
    if n == 0:
        return []
    diffs = np.zeros(n)
    for i in range(1, n):
        a, b = hists[i - 1], hists[i]
        a0, b0 = a - a.mean(), b - b.mean()
        corr = float((a0 * b0).sum() / (np.sqrt((a0 ** 2).sum() * (b0 ** 2).sum()) + 1e-12))
        diffs[i] = 1.0 - corr
    cuts = [0]
    win = max(1, int(round(fps)))
    for i in range(1, n):
        prev = diffs[max(1, i - win):i]
        med = float(np.median(prev)) if prev.size else 0.0
        if diffs[i] > threshold and diffs[i] > 3.0 * med and i - cuts[-1] >= 2:
            cuts.append(i)
    cuts.append(n)
    return [(cuts[k], cuts[k + 1]) for k in range(len(cuts) - 1)]


def scenedetect_shots(path: Path, num_frames: int) -> list[tuple[int, int]]:
    """Shot ranges from PySceneDetect's AdaptiveDetector (official settings: threshold 2)."""
    from scenedetect import AdaptiveDetector, detect

    scenes = detect(str(path), AdaptiveDetector(adaptive_threshold=2.0), start_in_scene=True)
    out = [(s.get_frames(), e.get_frames()) for s, e in scenes]
    return out or [(0, num_frames)]


def have_scenedetect() -> bool:
    try:
        import scenedetect  # noqa: F401
        return True
    except Exception:
        return False


def process(src: Path, out_dir: Path, rel: Path, opts: Options) -> tuple[list[Path], dict]:
    from latentsync.video.io import iter_frames

    info, audio = probe_clip(src, opts.sample_rate)
    fps = float(info.fps)
    use_sd = opts.shot_detector == "scenedetect" or (opts.shot_detector == "auto" and have_scenedetect())
    if use_sd:
        shots = scenedetect_shots(src, info.num_frames)
    else:
        shots = histogram_shots((f for c in iter_frames(src, chunk_size=32) for f in c), fps, opts.shot_threshold)
    min_len = int(round(opts.min_shot_seconds * fps))
    keep = [(n, s) for n, s in enumerate(shots) if s[1] - s[0] >= min_len]
    if not keep:
        raise Filtered(f"no shot of at least {opts.min_shot_seconds} s ({len(shots)} shots)")
    paths = [out_dir / rel.parent / f"{rel.stem}_shot_{n:03d}.mp4" for n, _ in keep]
    outputs = write_ranges(src, [s for _, s in keep], paths, info, audio, opts)
    return outputs, {"detector": "scenedetect" if use_sd else "histogram", "shots": [list(s) for s in shots]}
