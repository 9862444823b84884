"""DDIM sampling of one chunk of frames (spec 1.2, 1.10, 1.11).

The scheduler is diffusers' ``DDIMScheduler`` built from the official scheduler config (1000 training
steps, scaled-linear betas 0.00085..0.012, ``steps_offset`` 1, ``set_alpha_to_one`` false, epsilon
prediction, "leading" spacing: 20 steps -> timesteps 951, 901, ..., 1). One step is formula (12) of
Song et al. 2020, "Denoising Diffusion Implicit Models" (https://arxiv.org/abs/2010.02502)::

    x0_hat   = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)
    x_prev   = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - sigma_t^2) * eps + sigma_t * z,
    sigma_t  = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)

The loop follows k-diffusion's layout: model callable in, state in locals, one ``callback`` per step
for progress, previews, interrupts (raise from the callback) and parity traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import DDIMScheduler

from latentsync.errors import InvalidInputError
from latentsync.pipeline.guidance import GuidedPrediction, ZeroAudioGuidance, accepts_step_index, as_noise_model
from latentsync.pipeline.latents import ChunkConditioning

# The official configs/scheduler_config.json content (spec 1.2); diffusers defaults fill the rest.
DEFAULT_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}


def make_scheduler(config: dict | None = None) -> DDIMScheduler:
    """A ``DDIMScheduler`` from the official scheduler config.

    Args:
        config: scheduler config dict (``scheduler_config.json`` content); ``None`` uses
            ``latentsync.config.scheduler_config()`` when available, else the built-in copy of the same
            values.
    """
    if config is None:
        try:
            from latentsync.config import scheduler_config

            config = scheduler_config()
        except ImportError:  # pragma: no cover - module of another helper not present yet
            config = DEFAULT_SCHEDULER_CONFIG
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    return DDIMScheduler.from_config(cfg)


@dataclass
class StepInfo:
    """What the sampler reports after each DDIM step (passed to ``callback``).

    Attributes:
        step_index: 0-based position of ``timestep`` in the schedule.
        num_steps: ``num_inference_steps``.
        timestep: the training timestep t of this step (int).
        latents: ``[1, 4, F, h, w]`` x_{t-1} after the step.
        pred_original_sample: ``[1, 4, F, h, w]`` x0_hat (a preview of the clean latents).
        noise_pred: ``[1, 4, F, h, w]`` guided epsilon.
        noise_pred_raw: ``[B, 4, F, h, w]`` U-Net output before guidance (uncond first when B = 2).
        chunk_index: index of the chunk within the video (set by the caller; 0 by default).
    """

    step_index: int
    num_steps: int
    timestep: int
    latents: torch.Tensor
    pred_original_sample: torch.Tensor
    noise_pred: torch.Tensor
    noise_pred_raw: torch.Tensor
    chunk_index: int = 0


StepCallback = Callable[[StepInfo], None]


@torch.no_grad()
def sample_ddim(
    guided: ZeroAudioGuidance | Callable[..., GuidedPrediction],
    latents: torch.Tensor,
    cond: ChunkConditioning,
    scheduler: DDIMScheduler,
    num_inference_steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    chunk_index: int = 0,
) -> torch.Tensor:
    """DDIM loop over one chunk (spec 1.10). Implements Algorithm/formula (12) of Song et al. (2020).

    Args:
        guided: ``guided(latents, timestep, cond, step_index) -> GuidedPrediction`` (a
            :class:`ZeroAudioGuidance`).
        latents: ``[1, 4, F, h, w]`` x_T (already multiplied by ``init_noise_sigma``).
        cond: the chunk's conditioning (mask / masked / reference latents, audio embeddings).
        scheduler: a ``DDIMScheduler``; ``set_timesteps(num_inference_steps)`` is called here.
        num_inference_steps: >= 1.
        eta: DDIM eta (0 = deterministic, the official setting).
        generator: for the eta > 0 noise.
        callback: called with a :class:`StepInfo` after every step; raise from it to interrupt.
        chunk_index: copied into :class:`StepInfo`.

    Returns:
        ``[1, 4, F, h, w]`` denoised latents x_0.
    """
    if num_inference_steps < 1:
        raise InvalidInputError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    extra = {"eta": eta, "generator": generator} if eta > 0 else {"eta": 0.0}
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(latents, t)
        pred = guided(x_in, t, cond, i)
        out = scheduler.step(pred.noise_pred, t, latents, **extra)
        latents = out.prev_sample
        if callback is not None:
            callback(
                StepInfo(
                    step_index=i,
                    num_steps=len(scheduler.timesteps),
                    timestep=int(t),
                    latents=latents,
                    pred_original_sample=out.pred_original_sample,
                    noise_pred=pred.noise_pred,
                    noise_pred_raw=pred.noise_pred_raw,
                    chunk_index=chunk_index,
                )
            )
    return latents


@torch.no_grad()
def sample_chunk(
    unet,
    latents: torch.Tensor,
    cond: ChunkConditioning,
    num_inference_steps: int = 20,
    guidance_scale: float = 1.5,
    eta: float = 0.0,
    scheduler: DDIMScheduler | dict | None = None,
    generator: torch.Generator | None = None,
    deepcache: bool = False,
    callback: StepCallback | None = None,
    chunk_index: int = 0,
) -> torch.Tensor:
    """Denoise one chunk of up to 24 frames (16 in the official pipeline) with CFG and DDIM.

    Args:
        unet: ``UNet3DConditionModel`` or a ``DeepCacheUNet`` wrapping one.
        latents: ``[1, 4, F, h, w]`` initial noise (see :func:`~latentsync.pipeline.latents.expand_noise`).
        cond: :class:`~latentsync.pipeline.latents.ChunkConditioning` for the same F frames.
        num_inference_steps: DDIM steps (official default 20).
        guidance_scale: zero-audio CFG scale (official inference.sh: 1.5; <= 1 disables CFG).
        eta: DDIM eta (official: 0).
        scheduler: a ``DDIMScheduler`` (its timesteps are reset here), a scheduler config dict, or
            ``None`` for the official config.
        generator: randomness for eta > 0.
        deepcache: wrap a plain U-Net in ``DeepCacheUNet(unet, cache_interval=3, cache_branch_id=0)``
            (spec 1.11). A ``DeepCacheUNet`` passed as ``unet`` is used as is. Its cache is reset
            before the chunk (every chunk starts with a full step).
        callback: per-step :class:`StepInfo` hook (progress / interrupt / trace).
        chunk_index: reported in :class:`StepInfo`.

    Returns:
        ``[1, 4, F, h, w]`` latents x_0 (scaled; decode with ``latentsync.vae.decode_latents``).

    Raises:
        InvalidInputError: bad shapes, steps < 1, or frame counts that disagree.
    """
    if latents.ndim != 5 or latents.shape[0] != 1 or latents.shape[1] != 4:
        raise InvalidInputError(f"sample_chunk: latents must be [1, 4, F, h, w], got {tuple(latents.shape)}")
    f = latents.shape[2]
    if cond.num_frames != f or cond.audio_embeds.shape[0] != f:
        raise InvalidInputError(
            f"sample_chunk: latents have {f} frames but the conditioning has {cond.num_frames} image and "
            f"{cond.audio_embeds.shape[0]} audio frames"
        )
    if not isinstance(scheduler, DDIMScheduler):
        scheduler = make_scheduler(scheduler)
    if deepcache and not accepts_step_index(unet):
        from latentsync.pipeline.deepcache import DeepCacheUNet

        unet = DeepCacheUNet(unet, cache_interval=3, cache_branch_id=0)
    if hasattr(unet, "reset"):
        unet.reset()
    guided = ZeroAudioGuidance(as_noise_model(unet), guidance_scale)
    return sample_ddim(
        guided, latents, cond, scheduler, num_inference_steps, eta=eta, generator=generator,
        callback=callback, chunk_index=chunk_index,
    )
