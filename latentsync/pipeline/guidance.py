"""Adapters around the U-Net: a uniform noise-prediction callable and zero-audio CFG (spec 1.10).

Classifier-free guidance as in LatentSync: the unconditional branch is the same 13-channel input with
**all-zero audio embeddings** (training never drops the audio, spec 7.10); both branches run as one
batch of 2, unconditional first, and

    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)

``guidance_scale <= 1`` runs the conditional branch only (the official pipeline's switch is ``> 1``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from latentsync.pipeline.latents import ChunkConditioning


class NoiseModel(Protocol):
    """``eps = model(sample [B,13,F,h,w], timestep, encoder_hidden_states [B*F,50,384], step_index)``."""

    def __call__(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, step_index: int
    ) -> torch.Tensor: ...


def as_noise_model(unet: torch.nn.Module | Callable) -> NoiseModel:
    """Wrap a U-Net (or a :class:`~latentsync.pipeline.deepcache.DeepCacheUNet`) as a :class:`NoiseModel`.

    ``UNet3DConditionModel.forward`` returns ``UNet3DOutput(sample=...)`` and ignores the step index;
    ``DeepCacheUNet.__call__`` takes ``step_index`` and returns a tensor. Both end up as
    ``(sample, timestep, encoder_hidden_states, step_index) -> Tensor [B, 4, F, h, w]``.
    """
    if not accepts_step_index(unet):

        def call(sample, timestep, encoder_hidden_states, step_index):
            out = unet(sample, timestep, encoder_hidden_states=encoder_hidden_states)
            return out.sample if hasattr(out, "sample") else out

        return call

    def call_cached(sample, timestep, encoder_hidden_states, step_index):
        out = unet(sample, timestep, encoder_hidden_states, step_index=step_index)
        return out.sample if hasattr(out, "sample") else out

    return call_cached


def accepts_step_index(fn) -> bool:
    """True when ``fn(...)`` (or its ``forward`` for a module) has a ``step_index`` parameter."""
    candidates = [type(fn).__call__]
    if isinstance(fn, torch.nn.Module):
        candidates.insert(0, fn.forward)
    elif inspect.isfunction(fn) or inspect.ismethod(fn):
        candidates = [fn]
    for c in candidates:
        try:
            if "step_index" in inspect.signature(c).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


@dataclass
class GuidedPrediction:
    """Output of :class:`ZeroAudioGuidance`.

    Attributes:
        noise_pred: ``[1, 4, F, h, w]`` guided epsilon.
        noise_pred_raw: ``[B, 4, F, h, w]`` U-Net output before guidance (B = 2, unconditional first,
            when guidance is active; B = 1 otherwise).
    """

    noise_pred: torch.Tensor
    noise_pred_raw: torch.Tensor


class ZeroAudioGuidance:
    """Classifier-free guidance with zero audio as the unconditional input (spec 1.10).

    Args:
        model: a :class:`NoiseModel` (see :func:`as_noise_model`).
        guidance_scale: g >= 1; g > 1 enables the two-branch batch, g <= 1 runs the conditional branch.

    Call:
        ``guided(latents [1,4,F,h,w], timestep, cond: ChunkConditioning, step_index) -> GuidedPrediction``
    """

    def __init__(self, model: NoiseModel, guidance_scale: float = 1.5):
        self.model = model
        self.guidance_scale = float(guidance_scale)
        self._prepared: tuple[ChunkConditioning, torch.Tensor, torch.Tensor] | None = None

    @property
    def do_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    def _batch(self, cond: ChunkConditioning, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk's constant U-Net inputs, built on its first step and reused by the others.

        Returns ``(conditioning channels [B, 9, F, h, w], audio [B*F, 50, 384])`` on ``like``'s device
        and dtype, B = 2 (zero audio first) with guidance, else 1.
        """
        if self._prepared is None or self._prepared[0] is not cond:
            b = 2 if self.do_guidance else 1
            channels = cond.conditioning_channels(like).expand(b, -1, -1, -1, -1)
            audio = cond.audio_embeds.to(device=like.device, dtype=like.dtype)
            if self.do_guidance:
                audio = torch.cat([torch.zeros_like(audio), audio])  # [(2 F), 50, 384], uncond first
            self._prepared = (cond, channels, audio)
        return self._prepared[1], self._prepared[2]

    def __call__(
        self, latents: torch.Tensor, timestep: torch.Tensor, cond: ChunkConditioning, step_index: int
    ) -> GuidedPrediction:
        channels, audio = self._batch(cond, latents)
        x = torch.cat([latents, latents]) if self.do_guidance else latents
        raw = self.model(torch.cat([x, channels], dim=1), timestep, audio, step_index)
        if not self.do_guidance:
            return GuidedPrediction(noise_pred=raw, noise_pred_raw=raw)
        eps_uncond, eps_cond = raw.chunk(2)
        return GuidedPrediction(
            noise_pred=eps_uncond + self.guidance_scale * (eps_cond - eps_uncond), noise_pred_raw=raw
        )
