"""Building the 13-channel U-Net input and the initial noise (spec 1.8, 1.9, 1.10).

U-Net input channels, in this order (spec 1.9)::

    0-3   noisy latents x_t                                 [B, 4, F, h, w]
    4     mask, nearest-resized to h x w (1 keep, 0 mouth)  [B, 1, F, h, w]
    5-8   scaled VAE latents of the masked face             [B, 4, F, h, w]
    9-12  scaled VAE latents of the reference face          [B, 4, F, h, w]

with h = w = R/8 (32 for 256-pixel faces, 64 for 512). Latents of single frames are ``[F, 4, h, w]``
(frames as batch, what the VAE returns); the U-Net sees 5-D ``[B, C, F, h, w]`` tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from latentsync.errors import InvalidInputError

LATENT_CHANNELS = 4
VAE_DOWNSAMPLE = 8


def frames_to_video_latents(latents: torch.Tensor) -> torch.Tensor:
    """``[F, C, h, w]`` (frames as batch) -> ``[1, C, F, h, w]`` (one video)."""
    return latents.permute(1, 0, 2, 3).unsqueeze(0)


def video_to_frames_latents(latents: torch.Tensor) -> torch.Tensor:
    """``[1, C, F, h, w]`` -> ``[F, C, h, w]``; inverse of :func:`frames_to_video_latents`."""
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise InvalidInputError(f"expected video latents [1, C, F, h, w], got {tuple(latents.shape)}")
    return latents[0].permute(1, 0, 2, 3)


def initial_noise(
    latent_size: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    init_noise_sigma: float = 1.0,
) -> torch.Tensor:
    """The single noise draw shared by every frame of a video (spec 1.10).

    The official pipeline draws **one** Gaussian tensor ``(1, 4, 1, h, w)`` and repeats it over all
    frames, so every frame starts from identical noise. Streaming code keeps only this draw and
    expands it per chunk with :func:`expand_noise`.

    Args:
        latent_size: h = w = R/8 (32 or 64).
        generator: drawn from on the generator's own device (a CPU generator gives the same numbers on
            every machine); ``None`` uses the global RNG.
        dtype, device: of the returned tensor. The draw itself is always float32 on the generator's
            device, then cast and moved, so fp16 and fp32 runs start from the same noise up to rounding.
        init_noise_sigma: ``scheduler.init_noise_sigma`` (1.0 for DDIM).

    Returns:
        ``[1, 4, 1, h, w]`` noise.
    """
    shape = (1, LATENT_CHANNELS, 1, latent_size, latent_size)
    gen_device = generator.device if generator is not None else torch.device(device)
    noise = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
    return (noise * init_noise_sigma).to(device=device, dtype=dtype)


def expand_noise(noise: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[1, 4, 1, h, w]`` -> ``[1, 4, num_frames, h, w]`` (a real copy, safe to update in place)."""
    return noise.repeat(1, 1, num_frames, 1, 1)


def mask_to_tensor(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A ``[R, R]``, ``[1, R, R]`` or ``[3, R, R]`` mask (1 keep, 0 generate) as float32 ``[R, R]``."""
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.ndim == 3:
        m = m[0]
    if m.ndim != 2:
        raise InvalidInputError(f"mask must be [R, R] (or [C, R, R]), got shape {tuple(m.shape)}")
    return m.to(torch.float32)


def face_pixels(faces: np.ndarray | torch.Tensor, device=None, dtype=torch.float32) -> torch.Tensor:
    """Aligned faces uint8 ``[N, R, R, 3]`` RGB 0..255 -> float ``[N, 3, R, R]`` in [-1, 1] (spec 1.8).

    Float input in [0, 1] (``[N, R, R, 3]``) is accepted too.
    """
    x = torch.as_tensor(faces)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InvalidInputError(f"faces must be [N, R, R, 3], got shape {tuple(x.shape)}")
    x = x.to(device=device).permute(0, 3, 1, 2)
    x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
    return (x * 2.0 - 1.0).to(dtype)


def masked_and_reference(ref_pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``masked = ref * mask`` (the region to generate becomes 0, i.e. mid-grey; spec 1.8).

    Args:
        ref_pixels: ``[N, 3, R, R]`` in [-1, 1] (the unmasked frame is the reference at inference).
        mask: ``[R, R]`` float, 1 keep, 0 generate.
    """
    return ref_pixels * mask.to(device=ref_pixels.device, dtype=ref_pixels.dtype)


def mask_latents(mask: torch.Tensor, num_frames: int, latent_size: int) -> torch.Tensor:
    """The mask channel: nearest ``F.interpolate`` of the ``[R, R]`` mask to ``h x w`` (spec 1.9).

    Returns:
        ``[1, 1, num_frames, h, w]`` float (same dtype/device as ``mask``), values in {0, 1} for a
        binary mask.
    """
    m = F.interpolate(mask[None, None], size=(latent_size, latent_size))  # default mode: nearest
    return m[:, :, None].expand(1, 1, num_frames, latent_size, latent_size).contiguous()


@dataclass
class ChunkConditioning:
    """Everything the U-Net is conditioned on for one chunk of F frames (batch 1, conditional).

    Attributes:
        mask_latents: ``[1, 1, F, h, w]`` (spec 1.9 channel 4).
        masked_latents: ``[1, 4, F, h, w]`` scaled latents of the masked faces.
        ref_latents: ``[1, 4, F, h, w]`` scaled latents of the reference faces.
        audio_embeds: ``[F, 50, 384]`` Whisper windows, the U-Net's ``encoder_hidden_states``.
    """

    mask_latents: torch.Tensor
    masked_latents: torch.Tensor
    ref_latents: torch.Tensor
    audio_embeds: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.ref_latents.shape[2])

    def conditioning_channels(self, like: torch.Tensor) -> torch.Tensor:
        """``[mask | masked | reference]`` -> ``[1, 9, F, h, w]`` on ``like``'s device and dtype."""
        cond = torch.cat([self.mask_latents, self.masked_latents, self.ref_latents], dim=1)
        return cond.to(device=like.device, dtype=like.dtype)
