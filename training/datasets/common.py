"""Helpers shared by the training datasets: file lists, frame windows, cached mel, skip counting.

Inputs are the ``.mp4`` files written by the data pipeline (:mod:`training.preprocess`): aligned faces
at ``data.resolution``, 25 fps, 16 kHz audio (spec 3.1). Differences from the official loaders
(spec 7.13): caches are keyed by the **content hash** of the video, not its basename; a video that
fails to decode or is too short is skipped and counted (``num_skipped`` in every sample), and a
dataset gives up with an error after ``max_skips`` consecutive failures instead of retrying forever.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from latentsync.errors import InvalidInputError
from training.engine import file_content_hash

__all__ = [
    "list_videos",
    "read_frame_window",
    "frames_to_tensor",
    "mel_for_video",
    "mel_window",
    "MEL_FRAMES_PER_SECOND",
    "SkipSample",
    "TooManySkipsError",
    "collate_samples",
]

#: Wav2Lip-style mel runs at 16000 / hop 200 = 80 frames per second (spec 3.1).
MEL_FRAMES_PER_SECOND = 80


class SkipSample(Exception):
    """A video cannot provide a sample (decode error, too short); the dataset tries the next one."""


class TooManySkipsError(InvalidInputError):
    """Every candidate video failed in a row; the message lists the last failures."""


def list_videos(fileslist: str | None = "", data_dir: str | None = "") -> list[Path]:
    """Training videos: lines of ``fileslist`` (one path per line; relative paths are taken relative
    to the list's folder) or every ``*.mp4`` under ``data_dir`` (recursive, sorted).

    Raises:
        InvalidInputError: neither given, a missing list/folder, or no video found.
    """
    if fileslist:
        lst = Path(fileslist)
        if not lst.is_file():
            raise InvalidInputError(f"data fileslist {fileslist!r}: file not found")
        out = []
        for line in lst.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                out.append(p if p.is_absolute() else (lst.parent / p))
    elif data_dir:
        d = Path(data_dir)
        if not d.is_dir():
            raise InvalidInputError(f"data dir {data_dir!r}: folder not found")
        out = sorted(p for p in d.rglob("*.mp4") if not p.name.startswith("."))
    else:
        raise InvalidInputError(
            "training data: set data.train_fileslist (one .mp4 per line) or data.train_data_dir"
        )
    if not out:
        raise InvalidInputError(f"training data ({fileslist or data_dir}): no .mp4 video found")
    return out


def read_frame_window(path: str | os.PathLike, start: int, count: int) -> np.ndarray:
    """Frames ``start .. start+count-1`` of a video, uint8 ``[count, H, W, 3]`` RGB.

    Raises:
        SkipSample: decode failure or fewer than ``start + count`` frames.
    """
    from latentsync.video.io import iter_frames

    chunks, got = [], 0
    try:
        for chunk in iter_frames(path, chunk_size=count, start=start):
            chunks.append(chunk)
            got += len(chunk)
            if got >= count:
                break
    except Exception as exc:  # InvalidInputError or a PyAV error mid-stream
        raise SkipSample(f"{path}: cannot decode frames {start}..{start + count - 1}: {exc}") from exc
    if got < count:
        raise SkipSample(f"{path}: needed frames {start}..{start + count - 1}, video has {start + got}")
    return np.concatenate(chunks, 0)[:count]


def frames_to_tensor(frames: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, R, R]`` in [-1, 1] (bicubic antialiased resize
    when the size differs, as the official loaders do; spec 3.2)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    return x.mul_(2.0).sub_(1.0)


def _compute_mel(waveform: np.ndarray) -> torch.Tensor:
    """Wav2Lip-style normalised mel ``[80, T]`` (spec 3.1), by the AUDIO helper's module."""
    from latentsync.audio import mel as mel_mod

    for name in ("syncnet_mel_spectrogram", "syncnet_mel", "melspectrogram", "wav2lip_mel", "mel_spectrogram", "compute_mel"):
        fn: Callable | None = getattr(mel_mod, name, None)
        if fn is not None:
            out = fn(waveform)
            return torch.as_tensor(np.asarray(out) if not torch.is_tensor(out) else out)
    raise ImportError("latentsync.audio.mel provides no known mel function")


def mel_for_video(path: str | os.PathLike, cache_dir: str | os.PathLike | None,
                  sample_rate: int = 16000) -> torch.Tensor:
    """Mel of a video's audio track, float32 ``[80, T]`` at 80 frames/s, cached as
    ``<cache_dir>/<sha256 of the file>_mel.pt`` (a corrupt cache file is recomputed).

    Raises:
        SkipSample: the audio cannot be decoded.
    """
    cache_file = None
    if cache_dir:
        cache_file = Path(cache_dir) / f"{file_content_hash(path)}_mel.pt"
        if cache_file.is_file():
            try:
                return torch.load(cache_file, map_location="cpu", weights_only=True).float()
            except Exception:  # corrupt cache: recompute below
                warnings.warn(f"corrupt mel cache {cache_file}; recomputing", stacklevel=2)
    from latentsync.video.io import read_audio

    try:
        wav = read_audio(path, sample_rate=sample_rate)
    except Exception as exc:
        raise SkipSample(f"{path}: cannot decode audio: {exc}") from exc
    if wav.size < sample_rate // 5:
        raise SkipSample(f"{path}: audio track too short ({wav.size} samples)")
    mel = _compute_mel(wav).float()
    if cache_file is not None:
        from training.engine import atomic_torch_save

        atomic_torch_save(mel, cache_file)
    return mel


def mel_window(mel: torch.Tensor, start_frame: int, num_frames: int = 16, fps: float = 25.0) -> torch.Tensor:
    """Mel window of a clip starting at video frame ``start_frame``: start ``int(80*s/fps)``, length
    ``ceil(num_frames/fps*80)`` (52 for 16 frames at 25 fps) -> float32 ``[1, 80, 52]`` (spec 3.1).

    Raises:
        SkipSample: the window runs past the end of the mel.
    """
    a = int(MEL_FRAMES_PER_SECOND * start_frame / fps)
    length = int(np.ceil(num_frames / fps * MEL_FRAMES_PER_SECOND))
    if a + length > mel.shape[-1]:
        raise SkipSample(f"mel window {a}..{a + length} past the end ({mel.shape[-1]} frames)")
    return mel[:, a:a + length].unsqueeze(0).float()


def usable_frames(num_video_frames: int, mel_len: int, num_frames: int = 16, fps: float = 25.0) -> int:
    """Number of valid clip starts: ``s + num_frames <= N`` and the mel window fits."""
    length = int(np.ceil(num_frames / fps * MEL_FRAMES_PER_SECOND))
    n = 0
    for s in range(max(0, num_video_frames - num_frames + 1)):
        if int(MEL_FRAMES_PER_SECOND * s / fps) + length <= mel_len:
            n = s + 1
    return n


def collate_samples(samples: Sequence[dict]) -> dict:
    """Stack tensors, list everything else, sum ``num_skipped``."""
    out: dict = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if key == "num_skipped":
            out[key] = int(sum(vals))
        elif torch.is_tensor(vals[0]):
            out[key] = torch.stack(vals, 0)
        elif isinstance(vals[0], (float, int)) and not isinstance(vals[0], bool):
            out[key] = torch.tensor(vals)
        else:
            out[key] = vals
    return out


class SkippingDataset(torch.utils.data.Dataset):
    """Base: ``__getitem__((item, seed))`` calls ``make_sample(path, rng)``; on :class:`SkipSample`
    tries item+1, item+2, ... (deterministically), counting skips; gives up after ``max_skips``."""

    def __init__(self, videos: Sequence[Path], seed: int, max_skips: int = 20) -> None:
        self.videos = [Path(v) for v in videos]
        self.seed = int(seed)
        self.max_skips = int(max_skips)
        self.skipped: dict[str, str] = {}  # path -> reason (per worker process)
        self._num_frames_memo: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def _video_frames(self, path: Path) -> int:
        """Frame count of ``path`` (probed once, then memoised); :class:`SkipSample` if unreadable."""
        key = str(path)
        if key not in self._num_frames_memo:
            from latentsync.video.io import probe_video

            try:
                self._num_frames_memo[key] = probe_video(path).num_frames
            except Exception as exc:
                raise SkipSample(f"{path}: cannot open video: {exc}") from exc
        return self._num_frames_memo[key]

    def make_sample(self, path: Path, rng: np.random.Generator) -> dict:  # pragma: no cover
        raise NotImplementedError

    def __getitem__(self, key) -> dict:
        if isinstance(key, (tuple, list)):
            item, sseed = int(key[0]), int(key[1])
        else:
            item, sseed = int(key), int(key)
        reasons = []
        for attempt in range(min(self.max_skips, len(self.videos)) or 1):
            path = self.videos[(item + attempt) % len(self.videos)]
            if str(path) in self.skipped:
                reasons.append(self.skipped[str(path)])
                continue
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, sseed & 0xFFFFFFFF, sseed >> 32, attempt])
            try:
                sample = self.make_sample(path, rng)
            except SkipSample as exc:
                msg = str(exc)
                if "mel window" not in msg:  # a file-level failure: remember it
                    self.skipped[str(path)] = msg
                    warnings.warn(f"skipping training video: {msg}", stacklevel=2)
                reasons.append(msg)
                continue
            sample["num_skipped"] = len(reasons)
            return sample
        raise TooManySkipsError(
            f"training data: {len(reasons)} consecutive videos failed; last: {reasons[-3:]}"
        )
