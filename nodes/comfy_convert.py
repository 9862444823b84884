"""ComfyUI IMAGE / AUDIO values <-> the backend's uint8 frames and 16 kHz waveforms.

* IMAGE (float32 ``[B, H, W, C]`` 0..1) <-> uint8 frames ``[n, H, W, 3]`` in bounded chunks, so that a
  long video is never copied whole; :class:`ImageFrames` is the backend frame source over an IMAGE;
* AUDIO (``{"waveform": [B, C, T], "sample_rate": int}``, read by key: VideoHelperSuite passes a lazy
  mapping) -> mono float32 16 kHz waveform ``[T]`` as the backend's Whisper features expect.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch

FRAME_CHUNK = 16
"""Frames converted at once between IMAGE and uint8 (one U-Net chunk, spec 1.10)."""
WHISPER_SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------------
# IMAGE <-> uint8 frames
# ------------------------------------------------------------------------------------------------

IMAGE_RANGE_SLACK = 0.5
"""Values this far outside 0..1 (upscaler ringing, unclamped VAE output) are clamped; beyond it an IMAGE is refused."""
_SCAN_FRAMES = 16  # frames checked at once (bounded memory on long videos)


def check_image(images: Any, name: str = "images") -> torch.Tensor:
    """Validate an IMAGE batch: float ``[B, H, W, C]`` in 0..1 with C in (1, 3, 4), B >= 1, all finite.

    The values are scanned in chunks of frames (no whole-video copy). What has one meaning is
    converted later by :func:`image_to_uint8` (1 channel -> grey RGB, RGBA -> RGB, overshoot within
    ``IMAGE_RANGE_SLACK`` clamped); everything else is refused here.

    Raises:
        ValueError: naming the input, what was found (shape, dtype, value range, first NaN frame)
            and what is expected: not a 4-D tensor, a channel count other than 1/3/4, 0 frames,
            an integer/bool dtype (e.g. uint8 0..255), NaN/inf pixels, or values outside 0..1
            (e.g. 0..255 floats or -1..1).
    """
    label = f"input {name!r}"
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{label}: expected an IMAGE batch [B, H, W, 3], got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{label}: the IMAGE batch is empty (0 frames)")
    dtype = str(images.dtype).replace("torch.", "")
    if not images.is_floating_point():
        lo, hi = (int(v) for v in torch.aminmax(images[:_SCAN_FRAMES].to(torch.int64)))
        raise ValueError(f"{label}: expected an IMAGE of floats in 0..1, got {dtype} (values {lo}..{hi} in the "
                         f"first frames); convert it to float{' and divide by 255' if hi > 1 else ''} first")
    lo, hi = math.inf, -math.inf
    for s in range(0, images.shape[0], _SCAN_FRAMES):
        part_lo, part_hi = (float(v) for v in torch.aminmax(images[s:s + _SCAN_FRAMES]))
        if math.isnan(part_lo) or math.isnan(part_hi) or math.isinf(part_lo) or math.isinf(part_hi):
            bad = ~torch.isfinite(images[s:s + _SCAN_FRAMES]).flatten(1).all(1)
            raise ValueError(f"{label}: frame {s + int(bad.nonzero()[0])} has NaN or infinite pixels; "
                             "expected finite values in 0..1")
        lo, hi = min(lo, part_lo), max(hi, part_hi)
    if lo < -IMAGE_RANGE_SLACK or hi > 1 + IMAGE_RANGE_SLACK:
        hint = ("it looks like 0..255 values: divide by 255" if hi > 2 else
                "it looks like -1..1 values: use (x + 1) / 2" if lo < -0.9 else "clamp it to 0..1")
        raise ValueError(f"{label}: expected IMAGE values in 0..1, found {lo:.3g}..{hi:.3g} ({dtype}); {hint}")
    return images


def image_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """IMAGE float ``[n, H, W, C]`` 0..1 (checked by :func:`check_image`) -> uint8 ``[n, H, W, 3]`` RGB.

    Rounded and clamped; 1 channel is repeated to grey RGB, the alpha of RGBA is dropped.
    """
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
        ValueError: no audio, a waveform that is not ``[B, C, T]``/``[C, T]``, an empty batch, 0 channels
            or samples, integer samples.
        InvalidInputError: a NaN / infinite sample (first one's time in the message).
    """
    from latentsync.video.io import resample_audio

    if audio is None:
        raise ValueError("input 'audio' is None (the source may have no audio track)")
    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (KeyError, TypeError):
        raise ValueError("input 'audio': expected an AUDIO mapping with 'waveform' and 'sample_rate'") from None
    w = torch.as_tensor(waveform)
    shape = tuple(w.shape)
    if w.ndim == 3:
        if w.shape[0] == 0:
            raise ValueError(f"input 'audio': the AUDIO batch is empty (waveform {shape}); expected [B, C, T] with B >= 1")
        w = w[0]
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[-1] == 0:
        raise ValueError(f"input 'audio': expected a waveform [B, C, T] with C, T > 0, got {shape}")
    if not w.is_floating_point():
        raise ValueError(f"input 'audio': expected float samples in -1..1, got {str(w.dtype).replace('torch.', '')}; "
                         "convert it to float (int16: divide by 32768)")
    return resample_audio(w.detach().to("cpu", torch.float32).numpy(), rate, WHISPER_SAMPLE_RATE, what="input 'audio'")


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
