"""Sampling of one chunk of frames: DDIM (official) or DPM-Solver++ (fast mode) (spec 1.2, 1.10, 1.11).

**DDIM** (the default, the official sampler) is diffusers' ``DDIMScheduler`` built from the official
scheduler config (1000 training steps, scaled-linear betas 0.00085..0.012, ``steps_offset`` 1,
``set_alpha_to_one`` false, epsilon prediction, "leading" spacing: 20 steps -> timesteps 951, 901, ...,
1). One step is formula (12) of Song et al. 2020, "Denoising Diffusion Implicit Models"
(https://arxiv.org/abs/2010.02502)::

    x0_hat   = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)
    x_prev   = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - sigma_t^2) * eps + sigma_t * z,
    sigma_t  = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)

**DPM-Solver++** (``"dpmsolver++"``, not in the official code) is diffusers'
``DPMSolverMultistepScheduler`` on the same betas: the second-order multistep solver of Lu et al.
2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models"
(https://arxiv.org/abs/2211.01095), Algorithm 2 ("2M"), data prediction, midpoint rule, first order on
the first and the last step, diffusers' "linspace" spacing (10 steps -> 999, 899, ..., 100) and a final
step to sigma 0. It keeps the model outputs of the previous step; that state is cleared by
``set_timesteps``, which :func:`sample_loop` calls at the start of every chunk, so each 16-frame chunk
is an independent solve. What it trades: about 10 steps reach the quality DDIM needs 20-25 for (half
the U-Net passes), but the result is not the official one (another solver, another timestep grid),
``eta`` is not available, and under 8 steps faces become softer.

The loop follows k-diffusion's layout: model callable in, state in locals, one ``callback`` per step
for progress, previews, interrupts (raise from the callback) and parity traces. The schedule stays on
the CPU (scheduler arithmetic on CPU scalars), the U-Net gets the timesteps from one device copy made
per chunk: no host <-> device synchronisation inside the step loop.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from latentsync.config import SCHEDULERS, scheduler_config
from latentsync.errors import InvalidInputError
from latentsync.pipeline.guidance import GuidedPrediction, ZeroAudioGuidance, accepts_step_index, as_noise_model
from latentsync.pipeline.latents import ChunkConditioning

Scheduler = DDIMScheduler | DPMSolverMultistepScheduler

# DPM-Solver++(2M) as diffusers' Stable Diffusion pipelines use it (Lu et al. 2022, Algorithm 2).
_DPMSOLVER_SETTINGS = {
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    "lower_order_final": True,
    "timestep_spacing": "linspace",
    "final_sigmas_type": "zero",
}


def make_scheduler(config: dict | None = None, name: str = "ddim") -> Scheduler:
    """A scheduler on the official noise schedule.

    Args:
        config: scheduler config dict (``scheduler_config.json`` content); ``None`` uses the official
            one (:func:`latentsync.config.scheduler_config`). Keys starting with ``_`` and keys the
            scheduler class does not take (``clip_sample`` for DPM-Solver++) are dropped.
        name: ``"ddim"`` (official) or ``"dpmsolver++"`` (fast mode, see the module docstring).

    Returns:
        ``DDIMScheduler`` or ``DPMSolverMultistepScheduler``.

    Raises:
        InvalidInputError: unknown ``name``.
    """
    if name not in SCHEDULERS:
        raise InvalidInputError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, got {name!r}")
    config = scheduler_config() if config is None else config
    cls = DDIMScheduler if name == "ddim" else DPMSolverMultistepScheduler
    accepted = set(inspect.signature(cls.__init__).parameters)
    cfg = {k: v for k, v in config.items() if not k.startswith("_") and k in accepted}
    if cls is DPMSolverMultistepScheduler:
        cfg.update(_DPMSOLVER_SETTINGS)
    return cls.from_config(cfg)


@dataclass
class StepInfo:
    """What the sampler reports after each step (passed to ``callback``).

    Attributes:
        step_index: 0-based position of ``timestep`` in the schedule.
        num_steps: ``num_inference_steps``.
        timestep: the training timestep t of this step (int).
        latents: ``[1, 4, F, h, w]`` x_{t-1} after the step.
        pred_original_sample: ``[1, 4, F, h, w]`` x0_hat predicted from x_t and the guided epsilon (a
            preview of the clean latents).
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
def sample_loop(
    guided: ZeroAudioGuidance | Callable[..., GuidedPrediction],
    latents: torch.Tensor,
    cond: ChunkConditioning,
    scheduler: Scheduler,
    num_inference_steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    chunk_index: int = 0,
) -> torch.Tensor:
    """Denoising loop over one chunk (spec 1.10): DDIM formula (12) of Song et al. (2020), or DPM-Solver++.

    The scheduler's timesteps **and its solver state** are reset here (``set_timesteps``), so a
    scheduler object can serve any number of chunks, one after the other.

    Args:
        guided: ``guided(latents, timestep, cond, step_index) -> GuidedPrediction`` (a
            :class:`ZeroAudioGuidance`); ``timestep`` is a 0-dim int64 tensor on ``latents``' device.
        latents: ``[1, 4, F, h, w]`` x_T (already multiplied by ``init_noise_sigma``).
        cond: the chunk's conditioning (mask / masked / reference latents, audio embeddings).
        scheduler: from :func:`make_scheduler`.
        num_inference_steps: >= 1.
        eta: DDIM eta (0 = deterministic, the official setting); DPM-Solver++ takes only 0.
        generator: for the eta > 0 noise.
        callback: called with a :class:`StepInfo` after every step; raise from it to interrupt.
        chunk_index: copied into :class:`StepInfo`.

    Returns:
        ``[1, 4, F, h, w]`` denoised latents x_0.

    Raises:
        InvalidInputError: ``num_inference_steps < 1``; ``eta > 0`` with DPM-Solver++.
    """
    if num_inference_steps < 1:
        raise InvalidInputError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    is_ddim = isinstance(scheduler, DDIMScheduler)
    if eta > 0 and not is_ddim:
        raise InvalidInputError(f"eta: only DDIM takes eta > 0, got eta={eta} with {type(scheduler).__name__}")
    scheduler.set_timesteps(num_inference_steps)  # CPU schedule; clears the solver state
    timesteps = scheduler.timesteps
    device_timesteps = timesteps.to(latents.device)  # one copy per chunk, indexed on the device
    extra = ({"eta": eta, "generator": generator} if eta > 0 else {"eta": 0.0}) if is_ddim else {}
    for i, t in enumerate(timesteps):
        x_in = scheduler.scale_model_input(latents, t)
        pred = guided(x_in, device_timesteps[i], cond, i)
        out = scheduler.step(pred.noise_pred, t, latents, **extra)
        if callback is not None:
            x0 = out.pred_original_sample if is_ddim else _predicted_x0(scheduler, latents, pred.noise_pred, t)
        latents = out.prev_sample
        if callback is not None:
            callback(
                StepInfo(
                    step_index=i,
                    num_steps=len(timesteps),
                    timestep=int(t),
                    latents=latents,
                    pred_original_sample=x0,
                    noise_pred=pred.noise_pred,
                    noise_pred_raw=pred.noise_pred_raw,
                    chunk_index=chunk_index,
                )
            )
    return latents


def _predicted_x0(scheduler: Scheduler, latents: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` (formula (12)'s first line) for a preview."""
    a_t = scheduler.alphas_cumprod[int(t)]
    return (latents - (1 - a_t).sqrt() * eps) / a_t.sqrt()


@torch.no_grad()
def sample_chunk(
    unet,
    latents: torch.Tensor,
    cond: ChunkConditioning,
    num_inference_steps: int = 20,
    guidance_scale: float = 1.5,
    eta: float = 0.0,
    scheduler: Scheduler | str | None = None,
    generator: torch.Generator | None = None,
    deepcache: bool = False,
    callback: StepCallback | None = None,
    chunk_index: int = 0,
) -> torch.Tensor:
    """Denoise one chunk of up to 24 frames (16 in the official pipeline) with CFG and DDIM / DPM-Solver++.

    Args:
        unet: ``UNet3DConditionModel`` or a ``DeepCacheUNet`` wrapping one.
        latents: ``[1, 4, F, h, w]`` initial noise (see :func:`~latentsync.pipeline.latents.expand_noise`).
        cond: :class:`~latentsync.pipeline.latents.ChunkConditioning` for the same F frames.
        num_inference_steps: sampler steps (official DDIM default 20; about 10 for DPM-Solver++).
        guidance_scale: zero-audio CFG scale (official inference.sh: 1.5; <= 1 disables CFG).
        eta: DDIM eta (official: 0; DPM-Solver++ takes only 0).
        scheduler: a scheduler from :func:`make_scheduler` (its timesteps and solver state are reset
            here), a name in :data:`SCHEDULERS`, or ``None`` for the official DDIM.
        generator: randomness for eta > 0.
        deepcache: wrap a plain U-Net in ``DeepCacheUNet(unet, cache_interval=3, cache_branch_id=0)``
            (spec 1.11). A ``DeepCacheUNet`` passed as ``unet`` is used as is. Its cache is reset
            before the chunk (every chunk starts with a full step).
        callback: per-step :class:`StepInfo` hook (progress / interrupt / trace).
        chunk_index: reported in :class:`StepInfo`.

    Returns:
        ``[1, 4, F, h, w]`` latents x_0 (scaled; decode with ``latentsync.vae.decode_latents``).

    Raises:
        InvalidInputError: bad shapes, steps < 1, frame counts that disagree, unknown scheduler name,
            eta > 0 with DPM-Solver++.
    """
    if latents.ndim != 5 or latents.shape[0] != 1 or latents.shape[1] != 4:
        raise InvalidInputError(f"sample_chunk: latents must be [1, 4, F, h, w], got {tuple(latents.shape)}")
    f = latents.shape[2]
    if cond.num_frames != f or cond.audio_embeds.shape[0] != f:
        raise InvalidInputError(
            f"sample_chunk: latents have {f} frames but the conditioning has {cond.num_frames} image and "
            f"{cond.audio_embeds.shape[0]} audio frames"
        )
    if scheduler is None or isinstance(scheduler, str):
        scheduler = make_scheduler(name=scheduler or "ddim")
    if deepcache and not accepts_step_index(unet):
        from latentsync.pipeline.deepcache import DeepCacheUNet

        unet = DeepCacheUNet(unet, cache_interval=3, cache_branch_id=0)
    if hasattr(unet, "reset"):
        unet.reset()
    guided = ZeroAudioGuidance(as_noise_model(unet), guidance_scale)
    return sample_loop(
        guided, latents, cond, scheduler, num_inference_steps, eta=eta, generator=generator,
        callback=callback, chunk_index=chunk_index,
    )
