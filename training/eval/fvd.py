"""Fréchet Video Distance between two folders of videos (spec 5.3).

    python -m training.eval.fvd --real REAL_DIR --fake FAKE_DIR --i3d i3d_torchscript.pt \\
        [--start 20 --num-frames 16] [--face-crop auto|none]

Per video: frames ``start .. start+15`` (official: 20-35), a face crop (``auto``: mediapipe face
detection box on each frame when available, like the official script; ``none``: whole frame, e.g.
for aligned faces), resize to 224 (area), [0, 1]; the feature extractor is a local TorchScript file
called as ``model(videos [N, 3, 16, 224, 224], rescale=False, resize=False, return_features=True)``
(the StyleGAN-V I3D export) or, if it does not take those keywords, ``model(videos)``. FVD is the
Fréchet distance between Gaussian fits of the two feature sets. Videos shorter than the window are
reported and excluded (the official script returns an error object instead). Prints
``{"fvd", "num_real", "num_fake", "excluded": [...]}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from training.eval.common import print_json


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with the matrix square root via the
    symmetric form ``sqrt(S1)^(1/2) S2 sqrt(S1)^(1/2)`` (eigendecompositions, float64)."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1 = np.cov(f1, rowvar=False) if len(f1) > 1 else np.zeros((f1.shape[1],) * 2)
    s2 = np.cov(f2, rowvar=False) if len(f2) > 1 else np.zeros((f2.shape[1],) * 2)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def _face_boxes(frames: np.ndarray) -> list | None:
    try:
        import mediapipe as mp

        det = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
    except Exception:
        return None
    boxes = []
    try:
        for f in frames:
            res = det.process(f)
            if not res.detections:
                boxes.append(None)
                continue
            bb = res.detections[0].location_data.relative_bounding_box
            h, w = f.shape[:2]
            x0, y0 = max(0, int(bb.xmin * w)), max(0, int(bb.ymin * h))
            boxes.append((x0, y0, min(w, x0 + int(bb.width * w)), min(h, y0 + int(bb.height * h))))
    finally:
        det.close()
    return boxes


def video_clip(path: Path, start: int = 20, num_frames: int = 16, face_crop: str = "auto") -> np.ndarray:
    """float32 ``[3, F, 224, 224]`` in [0, 1]. Raises ValueError when the video is too short."""
    import cv2

    from latentsync.video.io import read_video

    frames, _ = read_video(path, max_frames=start + num_frames)
    if len(frames) < start + num_frames:
        raise ValueError(f"{path}: {len(frames)} frames, need {start + num_frames}")
    frames = frames[start:start + num_frames]
    boxes = _face_boxes(frames) if face_crop == "auto" else None
    out = []
    for i, f in enumerate(frames):
        if boxes is not None and boxes[i] is not None:
            x0, y0, x1, y1 = boxes[i]
            f = f[y0:y1, x0:x1]
        out.append(cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA))
    return np.stack(out).transpose(3, 0, 1, 2).astype(np.float32) / 255.0


@torch.no_grad()
def extract_features(model, clips: list[np.ndarray], batch_size: int = 4) -> np.ndarray:
    feats = []
    for i in range(0, len(clips), batch_size):
        x = torch.from_numpy(np.stack(clips[i:i + batch_size]))
        try:
            f = model(x, rescale=False, resize=False, return_features=True)
        except (TypeError, RuntimeError):
            f = model(x)
        feats.append(f.reshape(f.shape[0], -1).float().cpu().numpy())
    return np.concatenate(feats)


def compute_fvd(real_dir: str, fake_dir: str, i3d: str, start: int = 20, num_frames: int = 16,
                face_crop: str = "auto") -> dict:
    """FVD of two folders (see module docstring)."""
    from latentsync.errors import MissingWeightsError

    if not Path(i3d).is_file():
        raise MissingWeightsError(f"FVD feature extractor {i3d!r} not found: put the TorchScript I3D "
                                  "(i3d_torchscript.pt) there")
    model = torch.jit.load(i3d, map_location="cpu").eval()
    excluded, sets = [], {}
    for name, d in (("real", real_dir), ("fake", fake_dir)):
        clips = []
        for p in sorted(Path(d).rglob("*.mp4")):
            try:
                clips.append(video_clip(p, start, num_frames, face_crop))
            except Exception as exc:
                excluded.append({"video": str(p), "reason": str(exc)})
        if not clips:
            raise ValueError(f"--{name} {d}: no usable video")
        sets[name] = extract_features(model, clips)
    return {"fvd": frechet_distance(sets["real"], sets["fake"]), "num_real": len(sets["real"]),
            "num_fake": len(sets["fake"]), "excluded": excluded}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.eval.fvd", description=__doc__.splitlines()[0])
    ap.add_argument("--real", required=True)
    ap.add_argument("--fake", required=True)
    ap.add_argument("--i3d", required=True, help="TorchScript feature extractor")
    ap.add_argument("--start", type=int, default=20)
    ap.add_argument("--num-frames", type=int, default=16)
    ap.add_argument("--face-crop", choices=["auto", "none"], default="auto")
    args = ap.parse_args(argv)
    print_json(compute_fvd(args.real, args.fake, args.i3d, args.start, args.num_frames, args.face_crop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
