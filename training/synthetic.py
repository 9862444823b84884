"""Synthetic "talking face" clips for tests and smoke runs (no real data, no network).

Each clip is a ``resolution``-square video at 25 fps with 16 kHz audio: a skin-coloured disc
("face") on a coloured background, with a dark ellipse ("mouth") in the lower half whose opening
follows the loudness envelope of the audio (tone bursts with a random envelope per frame). Audio and
mouth are in sync by construction, so a SyncNet can in principle learn from these clips; the layout
matches the data pipeline's output (aligned faces, 25 fps, 16 kHz AAC).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["make_clip", "make_dataset"]


def make_clip(path: str | os.PathLike, num_frames: int = 50, resolution: int = 256, seed: int = 0,
              fps: int = 25, sample_rate: int = 16000) -> Path:
    """Write one synthetic clip (H.264 + AAC) to ``path``; returns the path."""
    from latentsync.video.io import VideoWriter

    rng = np.random.default_rng(seed)
    env = np.clip(rng.random(num_frames) * 1.4 - 0.2, 0.0, 1.0)  # mouth opening per frame, 0..1
    env = np.convolve(env, [0.25, 0.5, 0.25], mode="same")
    spf = sample_rate // fps
    t = np.arange(num_frames * spf) / sample_rate
    f0 = 150.0 + 100.0 * rng.random()
    tone = 0.6 * np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * 3.1 * f0 * t)
    audio = (tone * np.repeat(env, spf) + 0.01 * rng.standard_normal(t.size)).astype(np.float32) * 0.8

    r = resolution
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) / r
    bg = (rng.random(3) * 120 + 40).astype(np.float32)
    skin = np.array([205, 160, 130], np.float32) + rng.normal(0, 10, 3).astype(np.float32)
    face = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.42 ** 2
    eyes = (((xx - 0.35) ** 2 + (yy - 0.4) ** 2) < 0.03 ** 2) | (((xx - 0.65) ** 2 + (yy - 0.4) ** 2) < 0.03 ** 2)
    frames = np.empty((num_frames, r, r, 3), np.uint8)
    for i in range(num_frames):
        img = np.where(face[..., None], skin, bg)
        img[eyes] = (30, 30, 30)
        dx, dy = 0.01 * np.sin(i / 7.0), 0.005 * np.cos(i / 5.0)  # small head motion
        h = 0.01 + 0.07 * env[i]
        mouth = (((xx - 0.5 - dx) / 0.14) ** 2 + ((yy - 0.7 - dy) / h) ** 2) < 1.0
        img[mouth] = (60, 20, 25)
        frames[i] = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps=fps, width=r, height=r, audio=audio, sample_rate=sample_rate, crf=23,
                     preset="ultrafast") as w:
        w.write(frames)
    return path


def make_dataset(folder: str | os.PathLike, num_videos: int = 3, num_frames: int = 50,
                 resolution: int = 256, seed: int = 0) -> list[Path]:
    """Write ``num_videos`` clips ``clip_<i>.mp4`` into ``folder``; returns their paths."""
    return [make_clip(Path(folder) / f"clip_{i}.mp4", num_frames, resolution, seed + i)
            for i in range(num_videos)]
