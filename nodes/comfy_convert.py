"""ComfyUI IMAGE / AUDIO values <-> the backend's uint8 frames and 16 kHz waveforms.

* IMAGE (float32 ``[B, H, W, C]`` 0..1) <-> uint8 frames ``[n, H, W, 3]`` in bounded chunks, so that a
  long video is never copied whole; :class:`ImageFrames` is the backend frame source over an IMAGE;
* AUDIO (``{"waveform": [B, C, T], "sample_rate": int}``, read by key: VideoHelperSuite passes a lazy
  mapping) -> mono float32 16 kHz waveform ``[T]`` as the backend's Whisper features expect.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

FRAME_CHUNK = 16
"""Frames converted at once between IMAGE and uint8 (one U-Net chunk, spec 1.10)."""
WHISPER_SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------------
# IMAGE <-> uint8 frames
# ------------------------------------------------------------------------------------------------

def check_image(images: Any, name: str = "images") -> torch.Tensor:
    """Validate an IMAGE batch: float ``[B, H, W, C]`` with C in (1, 3, 4) and B >= 1."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"input {name!r}: expected an IMAGE batch [B, H, W, 3], got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"input {name!r}: the IMAGE batch is empty (0 frames)")
    return images


def image_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """IMAGE float ``[n, H, W, C]`` 0..1 -> uint8 ``[n, H, W, 3]`` RGB (rounded, clamped; alpha dropped)."""
    x = images
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    elif x.shape[-1] == 4:
        x = x[..., :3]
    return (x.float().clamp(0, 1) * 255.0).round_().to(torch.uint8)


def uint8_to_image(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> IMAGE float32 ``[n, H, W, 3]`` 0..1 on the CPU."""
    t = torch.as_tensor(frames)
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got {t.dtype}")
    return t.to("cpu", torch.float32).div_(255.0)


def iter_uint8_chunks(images: torch.Tensor, chunk: int = FRAME_CHUNK) -> Iterator[torch.Tensor]:
    """Yield uint8 chunks of an IMAGE batch without a whole-video copy."""
    for s in range(0, images.shape[0], chunk):
        yield image_to_uint8(images[s:s + chunk])


class ImageFrames:
    """Backend frame source (:mod:`latentsync.video.sources`) over an IMAGE batch.

    Args:
        images: IMAGE ``[N, H, W, C]`` (checked with :func:`check_image`).
        name: the input named in messages.
    """

    fps = None

    def __init__(self, images: Any, name: str = "images"):
        self.images = check_image(images, name)
        self.num_frames = int(images.shape[0])
        self.frame_size = (int(images.shape[1]), int(images.shape[2]))
        self.name = f"input {name!r}"

    def chunks(self, chunk: int = FRAME_CHUNK) -> Iterator[torch.Tensor]:
        return iter_uint8_chunks(self.images, chunk)


def collect_image(chunks: Iterator[tuple[int, Any]], num_frames: int, frame_size: tuple[int, int]) -> torch.Tensor:
    """``(start, uint8 [n, H, W, 3])`` chunks -> one IMAGE float32 ``[num_frames, H, W, 3]`` (allocated once)."""
    out = torch.empty((int(num_frames), *frame_size, 3), dtype=torch.float32)
    for start, frames in chunks:
        out[start:start + frames.shape[0]] = uint8_to_image(frames)
    return out


# ------------------------------------------------------------------------------------------------
# AUDIO -> mono 16 kHz
# ------------------------------------------------------------------------------------------------

def audio_to_mono_16k(audio: Any) -> np.ndarray:
    """ComfyUI AUDIO -> mono float32 waveform ``[T]`` at 16 kHz (spec 1.4 step 1).

    The first item of the batch is used; downmix and resampling are the backend's
    ``latentsync.video.io.resample_audio`` (the same libswresample path as the CLI's ``read_audio``).
    Mono 16 kHz input is passed through unchanged.

    Raises:
        ValueError: no audio, a waveform that is not ``[B, C, T]``/``[C, T]``, or 0 samples.
    """
    from latentsync.video.io import resample_audio

    if audio is None:
        raise ValueError("input 'audio' is None (the source may have no audio track)")
    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (KeyError, TypeError):
        raise ValueError("input 'audio': expected an AUDIO mapping with 'waveform' and 'sample_rate'") from None
    w = torch.as_tensor(waveform)
    if w.ndim == 3:
        w = w[0]
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[-1] == 0:
        raise ValueError(f"input 'audio': expected a waveform [B, C, T] with T > 0, got {tuple(torch.as_tensor(waveform).shape)}")
    return resample_audio(w.detach().to("cpu", torch.float32).numpy(), rate, WHISPER_SAMPLE_RATE)


def check_faces(faces: torch.Tensor, crops: Any) -> torch.Tensor:
    """Generated faces IMAGE ``[F, R, R, 3]`` whose R matches the face crops (ValueError otherwise)."""
    r = int(crops.resolution)
    if tuple(faces.shape[1:3]) != (r, r):
        raise ValueError(f"input 'faces': expected {r}x{r} faces (the face_crops resolution), got {tuple(faces.shape[1:3])}")
    return faces


PREVIEW_FRAMES = 64
"""Aligned faces shown by FaceCropAlign's ``faces`` output when the crops were spilled (long videos)."""


def faces_preview(crops: Any) -> torch.Tensor:
    """IMAGE of the aligned faces: all of them for in-memory crops, the first PREVIEW_FRAMES when spilled."""
    from latentsync.types import FaceCrops

    if isinstance(crops, FaceCrops):
        return uint8_to_image(crops.faces)
    return uint8_to_image(crops.select(np.arange(min(len(crops), PREVIEW_FRAMES))).faces)
