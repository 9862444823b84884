"""Benchmark: paste modes ("full" official vs "mouth" only) and colour matching, on the demo clips.

For each demo clip, the first ``--frames`` frames are aligned at 256 (FaceAligner, default
settings), their faces generated with tiny RANDOM weights (tiny U-Net + tiny VAE from
``latentsync.models.tiny``, 2 DDIM steps, no CFG, random audio windows; the output is noise in the
mouth region, which is what the measurement needs), composited in aligned space as the official
pipeline does, and pasted back in both modes. Prints one JSON object:

* ``outside_identical_frames``: frames in which every pixel outside the inverse-warped feathered
  generated region (``generated_region(...) == 0``) equals the input, per mode ("mouth" must be all).
* ``face_box_psnr_outside_generated_db``: PSNR (dB, vs the input) of the face box (the crop's
  bounding box in the frame) outside the generated region, per mode; "inf" = identical.
* ``colour``: the decoded faces replaced by the clip's own aligned faces (a perfect generator) with
  a simulated cast ``(face - 128) * gain + 128 + offset`` (offset ``+8, -5, +3`` levels, gain 1.1),
  pasted in mouth mode with and without matching; ``seam_step`` is, per channel, the mean of the
  output over the inner ring (fully pasted pixels, weight >= 0.999, within 6 px of the feather) minus the
  mean over the outer ring (untouched pixels within 6 px of the feather), averaged over frames;
  ``seam_step_minus_no_cast`` subtracts the same step without cast (the skin's own shading).
* ``ms_per_frame_1080p``: wall time of paste_back per 1080 x 1920 frame (batches of 16) for
  full, mouth, and mouth + colour matching, and the process CPU time.

Usage::

    nice -n 10 .venv/bin/python bench/bench_paste.py [--clips 1 2 3] [--frames 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentsync.face.aligner import FaceAligner  # noqa: E402
from latentsync.face.alignment import crop_bbox_in_frame  # noqa: E402
from latentsync.face.paste import generated_region, paste_back  # noqa: E402
from latentsync.models.tiny import build_tiny_unet, build_tiny_vae  # noqa: E402
from latentsync.pipeline.faces import composite_faces, sample_face_latents  # noqa: E402
from latentsync.vae import decode_latents  # noqa: E402
from latentsync.video.io import read_video  # noqa: E402

MEDIA = Path(os.environ.get("LATENTSYNC_SHARED_DIR", REPO.parent / "shared")) / "media"
OFFSET = np.array([8.0, -5.0, 3.0])
GAIN = 1.1
RING_PX = 6


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def rings(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inner ring (weight 1 within RING_PX of the feather) and outer ring (weight 0 within RING_PX)."""
    import cv2

    kernel = np.ones((2 * RING_PX + 1, 2 * RING_PX + 1), np.uint8)
    feather = ((weight > 0) & (weight < 0.999)).astype(np.uint8)
    near = cv2.dilate(feather, kernel) > 0
    return near & (weight >= 0.999), near & (weight == 0)


def generate(crops, seed: int = 0) -> torch.Tensor:
    """Composited faces float ``[F, R, R, 3]`` 0..1 from tiny random weights."""
    unet, vae = build_tiny_unet(seed).eval(), build_tiny_vae(seed).eval()
    n = len(crops)
    audio = torch.randn(n, 50, 384,  # Whisper tiny width (cross_attention_dim)
                        generator=torch.Generator().manual_seed(seed))
    latents = sample_face_latents(unet, vae, crops.faces, crops.mask, audio, num_inference_steps=2,
                                  guidance_scale=1.0, seed=seed)
    with torch.no_grad():
        decoded = decode_latents(vae, latents)
    return composite_faces((decoded.float() / 2 + 0.5).permute(0, 2, 3, 1), crops.faces, crops.mask)


def measure_clip(path: Path, frames_n: int) -> dict:
    frames, _ = read_video(path, max_frames=frames_n)
    with FaceAligner(256, download=False) as aligner:
        crops = aligner.align(frames)
    faces = generate(crops)
    rows = [i for i in range(len(crops)) if i not in set(crops.no_face_indices)]
    weights = {i: generated_region(crops, i) for i in rows}
    boxes = crop_bbox_in_frame(crops.affine_matrices.double().numpy(), crops.crop_size)
    res: dict = {"frames": len(rows), "outside_identical_frames": {}, "face_box_psnr_outside_generated_db": {}}
    for mode in ("full", "mouth"):
        out = paste_back(frames, faces, crops, mode=mode)
        same, a, b = 0, [], []
        for i in rows:
            outside = weights[i] == 0
            same += bool(np.array_equal(out[i][outside], frames[i][outside]))
            x0, y0, x1, y1 = np.clip(np.round(boxes[i]).astype(int), 0, None)
            box = np.zeros_like(outside)
            box[y0:y1, x0:x1] = True
            a.append(out[i][box & outside])
            b.append(frames[i][box & outside])
        res["outside_identical_frames"][mode] = f"{same}/{len(rows)}"
        res["face_box_psnr_outside_generated_db"][mode] = round(psnr(np.concatenate(a), np.concatenate(b)), 2)

    cast = ((crops.faces.double() - 128) * GAIN + 128 + torch.from_numpy(OFFSET)).clamp(0, 255).to(torch.uint8)
    steps = {}
    for name, f, match in (("no_cast", crops.faces, False), ("cast", cast, False), ("cast_matched", cast, True)):
        out = paste_back(frames, f, crops, mode="mouth", colour_match=match)
        per = []
        for i in rows:
            inner, outer = rings(weights[i])
            per.append(out[i][inner].mean(0) - out[i][outer].mean(0))
        steps[name] = np.mean(per, axis=0)
    res["colour"] = {
        "offset": OFFSET.tolist(), "gain": GAIN,
        "seam_step": {k: np.round(v, 2).tolist() for k, v in steps.items()},
        "seam_step_minus_no_cast": {k: np.round(steps[k] - steps["no_cast"], 2).tolist() for k in ("cast", "cast_matched")},
    }
    return res


def timing(path: Path, frames_n: int) -> dict:
    frames, _ = read_video(path, max_frames=frames_n)
    with FaceAligner(256, download=False) as aligner:
        crops = aligner.align(frames)
    out = {}
    for name, mode, match in (("full", "full", False), ("mouth", "mouth", False), ("mouth_colour_match", "mouth", True)):
        paste_back(frames, crops.faces, crops, mode=mode, colour_match=match)  # warm-up
        t, c = time.perf_counter(), time.process_time()
        paste_back(frames, crops.faces, crops, mode=mode, colour_match=match)
        out[name] = {"wall": round(1000 * (time.perf_counter() - t) / frames_n, 1),
                     "cpu": round(1000 * (time.process_time() - c) / frames_n, 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    report = {"clips": {}, "threads": torch.get_num_threads()}
    for c in args.clips:
        report["clips"][f"demo{c}"] = measure_clip(MEDIA / f"demo{c}_video.mp4", args.frames)
        print(json.dumps(report["clips"][f"demo{c}"]), file=sys.stderr)
    report["ms_per_frame_1080p"] = timing(MEDIA / "demo1_video.mp4", 16)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
