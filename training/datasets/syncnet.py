"""SyncNet dataset (spec 3.2): in-sync / off-sync pairs of a 16-frame face clip and a mel window.

Per sample (``key = (item, sample_seed)``, see :func:`training.engine.batch_keys`):

1. video ``item`` (must have >= 2 * num_frames frames and a long enough mel);
2. start ``s`` of the audio window and a different start ``s' != s`` (may overlap), both uniform;
3. with probability 0.5 the frames come from ``s`` (label 1, in sync), otherwise from ``s'``
   (label 0, off-sync negative from the same video);
4. frames resized to ``resolution`` (bicubic antialias), [-1, 1].

Difference from the official ``SyncNetDataset``: it ignores the index and draws a random video
with replacement; here every draw is a pure function of ``(seed, key)`` (NumPy PCG64 seeded with
both), so a run is reproducible and resumable, and items are visited once per epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from training.datasets.common import SkippingDataset, SkipSample, frames_to_tensor, mel_for_video
from training.datasets.common import mel_window, read_frame_window, usable_frames


class SyncNetDataset(SkippingDataset):
    """Samples ``{"frames": float32 [F, 3, R, R] in [-1, 1], "audio": float32 [1, 80, 52],
    "y": float 0/1, "video_path": str, "start_idx": int, "num_skipped": int}``.

    Args:
        videos: pipeline-processed ``.mp4`` paths (aligned faces, 25 fps, 16 kHz audio).
        seed: base seed (``run.seed``).
        resolution: face size R (256 for the released SyncNet).
        num_frames: clip length F (16).
        audio_mel_cache_dir: folder for ``<sha256>_mel.pt`` (None = no cache).
        fps, sample_rate: 25, 16000.
        max_skips: consecutive failing videos before :class:`TooManySkipsError`.
        frame_cache_mb: > 0: keep whole decoded videos (resized, float16) in memory up to this many
            MB per process, so each video is decoded once (small data sets, benchmarks).
    """

    def __init__(self, videos: Sequence[Path], seed: int, resolution: int = 256, num_frames: int = 16,
                 audio_mel_cache_dir: str | None = None, fps: float = 25.0, sample_rate: int = 16000,
                 max_skips: int = 20, frame_cache_mb: float = 0.0, paired: bool = False) -> None:
        super().__init__(videos, seed, max_skips)
        self.paired = bool(paired)
        self.frame_cache_mb = float(frame_cache_mb)
        self._frames: dict[str, torch.Tensor] = {}
        self._cache_bytes = 0
        self.resolution, self.num_frames = int(resolution), int(num_frames)
        self.cache_dir = audio_mel_cache_dir or None
        self.fps, self.sample_rate = float(fps), int(sample_rate)

    def _frame_window(self, path: Path, start: int, count: int) -> torch.Tensor:
        """float32 ``[count, 3, R, R]`` in [-1, 1] (from the in-memory cache when enabled)."""
        return _cached_or_read(self, path, start, count)

    def _starts_and_mel(self, path: Path) -> tuple[int, torch.Tensor]:
        """``(usable clip starts, mel [80, T])`` of ``path``; :class:`SkipSample` when no negative
        exists (fewer than ``2 * num_frames`` frames, or audio for fewer than two windows)."""
        F_ = self.num_frames
        n = self._video_frames(path)
        if n < 2 * F_:
            raise SkipSample(f"{path}: {n} frames, need at least {2 * F_}")
        mel = mel_for_video(path, self.cache_dir, self.sample_rate)
        n_start = usable_frames(n, mel.shape[-1], F_, self.fps)
        if n_start < 2:
            raise SkipSample(f"{path}: audio too short for two {F_}-frame windows")
        return n_start, mel

    def all_clips(self, path: Path) -> tuple[int, Callable[[int], torch.Tensor], torch.Tensor]:
        """Every clip of one video, for exhaustive evaluation: ``(N, frames_at, audio)`` with N usable
        starts, ``frames_at(s)`` -> float32 ``[F, 3, R, R]`` in [-1, 1] (decoded on demand, so a long
        video is never held in float32) and ``audio`` float32 ``[N, 1, 80, 52]``, row ``s`` in sync
        with ``frames_at(s)``.

        Raises:
            SkipSample: the video cannot be decoded or has no negative (see :meth:`make_sample`).
        """
        n_start, mel = self._starts_and_mel(path)
        audio = torch.stack([mel_window(mel, s, self.num_frames, self.fps) for s in range(n_start)])
        return n_start, lambda s: self._frame_window(path, s, self.num_frames), audio

    def make_sample(self, path: Path, rng: np.random.Generator) -> dict:
        F_ = self.num_frames
        n_start, mel = self._starts_and_mel(path)
        s = int(rng.integers(n_start))
        s_neg = int(rng.integers(n_start - 1))
        s_neg = s_neg + 1 if s_neg >= s else s_neg  # uniform over starts != s
        y = 1.0 if rng.random() < 0.5 else 0.0
        audio = mel_window(mel, s, F_, self.fps)
        if self.paired:
            frames = torch.stack([self._frame_window(path, s, F_), self._frame_window(path, s_neg, F_)])
            return {"frames": frames, "audio": audio, "y": torch.tensor([1.0, 0.0]), "video_path": str(path),
                    "start_idx": torch.tensor([s, s_neg])}
        frames_start = s if y == 1.0 else s_neg
        frames = self._frame_window(path, frames_start, F_)
        return {
            "frames": frames,
            "audio": audio,
            "y": y,
            "video_path": str(path),
            "start_idx": frames_start,
        }


def _cached_or_read(ds, path: Path, start: int, count: int) -> torch.Tensor:
    key = str(path)
    if ds.frame_cache_mb > 0:
        if key not in ds._frames:
            from latentsync.video.io import read_video

            try:
                frames, _ = read_video(path)
            except Exception as exc:
                raise SkipSample(f"{path}: cannot decode video: {exc}") from exc
            t = torch.cat([frames_to_tensor(frames[i:i + 64], ds.resolution) for i in range(0, len(frames), 64)]).half()
            if ds._cache_bytes + t.numel() * 2 <= ds.frame_cache_mb * 2**20:
                ds._frames[key] = t
                ds._cache_bytes += t.numel() * 2
            elif start + count <= len(t):
                return t[start:start + count].float()
        t = ds._frames.get(key)
        if t is not None:
            if start + count > len(t):
                raise SkipSample(f"{path}: needed frames {start}..{start + count - 1}, video has {len(t)}")
            return t[start:start + count].float()
    return frames_to_tensor(read_frame_window(path, start, count), ds.resolution)


def pack_syncnet_frames(frames: torch.Tensor, lower_half: bool = True) -> torch.Tensor:
    """``[B, F, 3, R, R]`` -> ``[B, 3F, R/2, R]`` (lower half, frame-major channels ``3f + c``), the
    StableSyncNet visual input (spec 2.6/3.2)."""
    b, f, c, h, w = frames.shape
    x = frames.reshape(b, f * c, h, w)
    return x[:, :, h // 2:, :] if lower_half else x


def unpair_batch(batch: dict) -> dict:
    """Flatten a batch of paired samples (``frames [B, 2, F, 3, R, R]``, ``y [B, 2]``) to ``2B``
    clips ``[2B, F, 3, R, R]`` in pair order (positive, negative, positive, ...); ``audio`` stays
    ``[B, 1, 80, 52]``, one window per pair, and ``"clips_per_audio"`` (2) says how many clips share
    each window, so the audio tower runs once per window (:func:`repeat_audio_embeds` widens its
    output). An unpaired batch comes back with ``"clips_per_audio": 1``."""
    frames = batch["frames"]
    if frames.ndim != 6:
        return {**batch, "clips_per_audio": 1}
    return {**batch, "frames": frames.flatten(0, 1), "y": batch["y"].flatten(), "clips_per_audio": frames.shape[1]}


def repeat_audio_embeds(audio_embeds: torch.Tensor, clips_per_audio: int) -> torch.Tensor:
    """``[B, D] -> [B * clips_per_audio, D]``: each window's embedding once per clip that shares it
    (the order of :func:`unpair_batch`). The gradients of the copies add up in the one tower pass,
    so this is the same loss and gradient as running the audio tower on every copy."""
    return audio_embeds.repeat_interleave(clips_per_audio, dim=0)
