"""Face latents from aligned faces + audio windows, and the aligned-space composite (spec 1.9, 1.10).

The one implementation of the per-chunk generation step, shared by :class:`LipSyncPipeline`
(streaming files, CLI) and the ComfyUI nodes (IMAGE batches): for each chunk of ``chunk_size``
frames, VAE-encode the masked faces and the reference faces (posterior samples from the seeded
generator: masked first, then references), build the 13-channel conditioning and run DDIM with
zero-audio CFG (optionally DeepCache). The initial noise ``[1, 4, 1, h, w]`` is drawn once, before
the first chunk, and shared by every chunk (spec 1.9), so the random stream for a seed is: noise,
then per chunk masked-face and reference posterior samples — the same on both paths.
"""

from __future__ import annotations

from typing import Callable

import torch

from latentsync.pipeline.latents import (ChunkConditioning, expand_noise, face_pixels, frames_to_video_latents,
                                         initial_noise, mask_latents, mask_to_tensor, masked_and_reference,
                                         video_to_frames_latents)
from latentsync.pipeline.timing import StageTimer

CHUNK_FRAMES = 16
"""Frames denoised together (official ``data.num_frames``)."""


@torch.no_grad()
def sample_face_latents(
    unet,
    vae,
    faces: torch.Tensor,
    mask: torch.Tensor,
    audio_embeds: torch.Tensor,
    *,
    num_inference_steps: int = 20,
    guidance_scale: float = 1.5,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    deepcache: bool = False,
    eta: float = 0.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    scheduler=None,
    vae_batch_size: int = 8,
    chunk_size: int = CHUNK_FRAMES,
    chunk_index: int = 0,
    callback: Callable | None = None,
    timer: StageTimer | None = None,
    out_device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Generate the scaled face latents of aligned faces, chunk by chunk (spec 1.9, 1.10).

    Args:
        unet: ``UNet3DConditionModel`` (or a ``DeepCacheUNet``) on ``device`` / ``dtype``.
        vae: diffusers-style ``AutoencoderKL`` (``encode(x).latent_dist`` with ``mean``/``std``).
        faces: uint8 ``[F, R, R, 3]`` aligned faces (or float 0..1), F >= 1.
        mask: ``[R, R]`` (or ``[C, R, R]``) float, 1 = keep, 0 = generate.
        audio_embeds: float ``[F, 50, 384]`` Whisper windows, row ``i`` for face ``i``.
        num_inference_steps: DDIM steps (>= 1).
        guidance_scale: zero-audio CFG scale (1 = no CFG).
        seed: seed of a new CPU generator (used when ``generator`` is None).
        generator: CPU generator to draw from (noise, VAE posterior samples, eta noise).
        noise: initial noise ``[1, 4, 1, R/8, R/8]`` already drawn (the streaming pipeline draws it
            once per job); None -> drawn here from the generator before anything else.
        deepcache: wrap a plain U-Net in DeepCache (spec 1.11).
        eta: DDIM eta (official 0).
        device, dtype: where the U-Net and VAE run.
        scheduler: DDIM scheduler; default :func:`latentsync.pipeline.sampler.make_scheduler`.
        vae_batch_size: images per VAE encode call.
        chunk_size: frames per U-Net chunk (1..24; official 16).
        chunk_index: index of the first chunk (reported to ``callback`` as ``StepInfo.chunk_index``).
        callback: called with the sampler's ``StepInfo`` after every step; raise to cancel.
        timer: adds the VAE-encode and sampler seconds to its ``encode_latents`` / ``denoise`` stages.
        out_device: where the returned latents go (the CPU for ComfyUI, the device for the CLI's decode).

    Returns:
        float32 ``[F, 4, R/8, R/8]`` latents on ``out_device``, **scaled** (x 0.18215, as the U-Net sees them).

    Raises:
        InvalidInputError: bad faces / mask shape, or neither ``seed`` nor ``generator`` given.
        ValueError: ``audio_embeds`` with another frame count than ``faces``.
    """
    from latentsync.errors import InvalidInputError
    from latentsync.pipeline.sampler import make_scheduler, sample_chunk
    from latentsync.vae import encode_frames

    if generator is None:
        if seed is None:
            raise InvalidInputError("sample_face_latents: expected a seed or a generator, got neither")
        generator = torch.Generator("cpu").manual_seed(int(seed))
    num = int(faces.shape[0])
    if int(audio_embeds.shape[0]) != num:
        raise ValueError(
            f"sample_face_latents: audio_embeds has {audio_embeds.shape[0]} rows but faces has {num} frames"
        )
    scheduler = scheduler if scheduler is not None else make_scheduler()
    timer = timer or StageTimer(device)
    size = int(faces.shape[1]) // 8
    if noise is None:
        noise = initial_noise(
            size, generator, dtype=dtype, device=device, init_noise_sigma=float(scheduler.init_noise_sigma)
        )
    m = mask_to_tensor(mask).to(device=device, dtype=dtype)
    mask_channel = mask_latents(m, min(int(chunk_size), num), size)  # built once, sliced per chunk
    out = []
    for c, s in enumerate(range(0, num, int(chunk_size))):
        ref = face_pixels(faces[s : s + chunk_size], device=device, dtype=dtype)  # [f, 3, R, R] in [-1, 1]
        f = ref.shape[0]
        # One batched VAE pass over masked faces then references: the random draws keep the official
        # order (masked first) because the posterior noise is drawn batch after batch.
        with timer("encode_latents"):
            latents_2f = encode_frames(vae, torch.cat([masked_and_reference(ref, m), ref]), generator, vae_batch_size)
            masked_latents, ref_latents = latents_2f.to(device, dtype).split(f)
        cond = ChunkConditioning(
            mask_latents=mask_channel[:, :, :f],
            masked_latents=frames_to_video_latents(masked_latents),
            ref_latents=frames_to_video_latents(ref_latents),
            audio_embeds=audio_embeds[s : s + f].to(device=device, dtype=dtype),
        )
        with timer("denoise"):
            latents = sample_chunk(
                unet, expand_noise(noise, f), cond, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, eta=eta, scheduler=scheduler, generator=generator,
                deepcache=deepcache, callback=callback, chunk_index=chunk_index + c,
            )
        out.append(video_to_frames_latents(latents).to(out_device, torch.float32))
    return torch.cat(out)


def composite_faces(generated: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the reference outside the generated region, in aligned-face space (spec 1.10, last step).

    ``out = generated * (1 - m) + reference * m`` with ``m`` the mask (1 keep, 0 generate).

    Args:
        generated: float ``[n, R, R, 3]`` 0..1 (decoded faces, not necessarily clamped).
        reference: uint8 ``[n, R, R, 3]`` aligned source faces (0..255), or float 0..1.
        mask: float ``[R, R]``.

    Returns:
        float32 ``[n, R, R, 3]`` on ``generated``'s device.

    Raises:
        ValueError: shapes that do not match ``[n, R, R, 3]`` / ``[R, R]``.
    """
    gen = torch.as_tensor(generated)
    ref = torch.as_tensor(reference).to(gen.device)
    m = torch.as_tensor(mask).to(gen.device, torch.float32)
    if gen.ndim != 4 or gen.shape[-1] != 3 or tuple(ref.shape) != tuple(gen.shape) or tuple(m.shape) != tuple(gen.shape[1:3]):
        raise ValueError(
            f"composite_faces: expected generated and reference [n, R, R, 3] and mask [R, R], got "
            f"{tuple(gen.shape)}, {tuple(ref.shape)}, {tuple(m.shape)}"
        )
    ref = ref.to(torch.float32) / 255.0 if ref.dtype == torch.uint8 else ref.to(torch.float32)
    m = m[..., None]
    return gen.to(torch.float32) * (1.0 - m) + ref * m
