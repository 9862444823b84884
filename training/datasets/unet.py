"""U-Net dataset (spec 3.3): a 16-frame target clip, a non-overlapping reference clip, the mask.

Per sample (``key = (item, sample_seed)``):

1. video ``item`` with >= 3 * num_frames frames;
2. target start ``s`` uniform; reference start ``r`` uniform among starts with ``|r - s| >= F``;
3. ``gt`` = target frames resized to R (bicubic antialias) in [-1, 1]; ``masked = gt * mask``;
   ``masks`` = the mask channel ``[F, 1, R, R]`` (1 keep, 0 generate); ``ref`` = reference frames;
4. ``mel`` ``[1, 80, 52]`` when ``need_mel`` (``add_audio_layer and use_syncnet``).

Whisper features are not computed here (they need the Whisper model): the sample carries
``video_path``, ``content_hash`` and ``start_idx`` and the training loop looks the features up in a
content-hash cache (:class:`training.train_unet.AudioFeatureCache`), as the official loop does.
Deterministic given ``(seed, key)`` (the official dataset draws a random video with replacement).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.datasets.common import SkippingDataset, SkipSample, frames_to_tensor, mel_for_video
from training.datasets.common import mel_window, read_frame_window
from training.engine import file_content_hash


def load_mask_image(path: str | os.PathLike | None, resolution: int) -> torch.Tensor:
    """Inpainting mask float32 ``[R, R]`` (1 keep, 0 generate; spec 1.8).

    ``path`` empty/None or the official default name -> :func:`latentsync.face.load_mask`; otherwise
    an image file: first channel / 255, resized with Lanczos to R (as the official loader).

    Raises:
        latentsync.errors.InvalidInputError: unreadable image.
    """
    from latentsync.errors import InvalidInputError
    import latentsync

    candidates = []
    if path:
        p = Path(path)
        candidates = [p, Path(latentsync.__file__).resolve().parent.parent / p,
                      Path(latentsync.__file__).resolve().parent / "face" / "assets" / p.name]
    else:
        candidates = [Path(latentsync.__file__).resolve().parent / "face" / "assets" / "mask.png"]
    for cand in candidates:
        if cand.is_file():
            import cv2

            img = cv2.imread(str(cand), cv2.IMREAD_COLOR)
            if img is None:
                raise InvalidInputError(f"mask image {str(cand)!r}: not a readable image")
            if img.shape[:2] != (resolution, resolution):
                img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
            return torch.from_numpy(img[..., 0].astype(np.float32) / 255.0)
    raise InvalidInputError(f"data.mask_image_path {str(path)!r}: image not found")


class UNetDataset(SkippingDataset):
    """Samples ``{"gt", "masked", "ref": float32 [F, 3, R, R] in [-1, 1], "masks": [F, 1, R, R],
    "mel": [1, 80, 52] (if need_mel), "video_path", "content_hash", "start_idx", "num_skipped"}``.

    Args:
        videos: pipeline-processed ``.mp4`` paths.
        seed: base seed; mask: ``[R, R]`` float (see :func:`load_mask_image`).
        resolution, num_frames, need_mel, audio_mel_cache_dir, fps, sample_rate: as the config.
    """

    def __init__(self, videos: Sequence[Path], seed: int, mask: torch.Tensor, resolution: int = 256,
                 num_frames: int = 16, need_mel: bool = False, audio_mel_cache_dir: str | None = None,
                 fps: float = 25.0, sample_rate: int = 16000, max_skips: int = 20) -> None:
        super().__init__(videos, seed, max_skips)
        self.resolution, self.num_frames = int(resolution), int(num_frames)
        self.mask = mask.float()
        if self.mask.shape != (self.resolution, self.resolution):
            self.mask = F.interpolate(self.mask[None, None], size=(self.resolution,) * 2, mode="bilinear",
                                      align_corners=False)[0, 0]
        self.need_mel = bool(need_mel)
        self.cache_dir = audio_mel_cache_dir or None
        self.fps, self.sample_rate = float(fps), int(sample_rate)

    def make_sample(self, path: Path, rng: np.random.Generator) -> dict:
        F_ = self.num_frames
        n = self._video_frames(path)
        if n < 3 * F_:
            raise SkipSample(f"{path}: {n} frames, need at least {3 * F_}")
        mel = mel_for_video(path, self.cache_dir, self.sample_rate) if self.need_mel else None
        n_start = n - F_ + 1
        if mel is not None:
            length = int(np.ceil(F_ / self.fps * 80))
            n_start = min(n_start, max(0, int((mel.shape[-1] - length) * self.fps / 80) + 1))
            while n_start > 0 and int(80 * (n_start - 1) / self.fps) + length > mel.shape[-1]:
                n_start -= 1
        if n_start < 1:
            raise SkipSample(f"{path}: audio too short for a {F_}-frame clip")
        s = int(rng.integers(n_start))
        ref_starts = [r for r in range(n - F_ + 1) if abs(r - s) >= F_]
        if not ref_starts:
            raise SkipSample(f"{path}: no reference clip at distance >= {F_} from start {s}")
        r = int(ref_starts[int(rng.integers(len(ref_starts)))])
        lo = min(s, r)
        window = read_frame_window(path, lo, max(s, r) + F_ - lo)
        gt = frames_to_tensor(window[s - lo:s - lo + F_], self.resolution)
        ref = frames_to_tensor(window[r - lo:r - lo + F_], self.resolution)
        m = self.mask[None, None].expand(F_, 1, self.resolution, self.resolution)
        sample = {
            "gt": gt,
            "masked": gt * m,
            "masks": m.clone(),
            "ref": ref,
            "video_path": str(path),
            "content_hash": file_content_hash(path),
            "start_idx": s,
        }
        if mel is not None:
            sample["mel"] = mel_window(mel, s, F_, self.fps)
        return sample
