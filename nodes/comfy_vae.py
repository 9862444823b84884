"""ComfyUI's VAE for the backend, and LATENT <-> backend latents."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

import torch


class ComfyVAE:
    """ComfyUI's ``VAE`` (VAELoader, sd-vae-ft-mse) seen through the diffusers ``AutoencoderKL``
    interface that ``latentsync.vae.encode_frames`` uses.

    ComfyUI's ``VAE.encode`` takes IMAGE-layout pixels 0..1 and returns the **unscaled posterior mean**
    (``DiagonalGaussianRegularizer(sample=False)`` -> ``mode()``). Here ``encode(x)`` takes
    diffusers-layout pixels ``[N, 3, H, W]`` in -1..1 and returns ``.latent_dist`` with ``mean`` = that
    posterior mean and ``std`` = 0. The backend then applies the 0.18215 factor itself (the only place
    that knows it) and still draws its posterior noise from the seeded generator, so the random stream
    is the same as on the CLI path; only the sample collapses to the mean (the official code uses a
    sample; the posterior std of sd-vae-ft-mse is tiny, see docs/comfyui.md). Decoding goes through
    ComfyUI's own ``VAE.decode`` (:func:`decode_faces`). Devices and batching of the real VAE stay
    ComfyUI's business (it loads the VAE through model management and returns CPU tensors), so
    ``device`` is the CPU and ``dtype`` float32.

    Raises:
        ValueError: not a VAE, or not a 4-channel one.
    """

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, vae: Any):
        if vae is None or not hasattr(vae, "encode") or not hasattr(vae, "decode"):
            raise ValueError(f"input 'vae': expected a VAE from a VAELoader node, got {type(vae).__name__}")
        channels = int(getattr(vae, "latent_channels", 4))
        if channels != 4:
            raise ValueError(
                f"input 'vae': LatentSync needs the 4-channel SD VAE (sd-vae-ft-mse), "
                f"got a VAE with {channels} latent channels"
            )
        from latentsync.vae import VAE_SCALING_FACTOR

        self.vae = vae
        self.config = SimpleNamespace(latent_channels=4, scaling_factor=VAE_SCALING_FACTOR)

    def encode(self, pixels: torch.Tensor) -> SimpleNamespace:
        """pixels float ``[N, 3, H, W]`` -1..1 -> ``.latent_dist`` (unscaled mean ``[N, 4, H/8, W/8]``, std 0)."""
        x = pixels.detach().to("cpu", torch.float32).add(1.0).mul_(0.5).clamp_(0, 1).movedim(1, -1)
        mean = self.vae.encode(x).to("cpu", torch.float32)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=torch.zeros_like(mean)))

    def decode_faces(self, samples: torch.Tensor, batch_size: int = 8, callback=None) -> torch.Tensor:
        """LATENT samples (unscaled) ``[n, 4, h, w]`` -> faces float32 ``[n, 8h, 8w, 3]`` 0..1 (CPU).

        ``batch_size`` latents per ``VAE.decode`` call; ``callback`` gets ``Progress("decode", done, n)``
        before each call and after the last.
        """
        from latentsync.pipeline.stages import report

        n = int(samples.shape[0])
        out = None
        for s in range(0, n, int(batch_size)):
            report(callback, "decode", s, n)
            img = self.vae.decode(samples[s:s + batch_size].detach().to("cpu", torch.float32)).to("cpu", torch.float32)
            if out is None:
                out = torch.empty((n,) + tuple(img.shape[1:]), dtype=torch.float32)
            out[s:s + img.shape[0]] = img
        report(callback, "decode", n, n)
        return out


def latent_samples(latent: Any, name: str = "latent") -> torch.Tensor:
    """The ``samples`` ``[F, 4, h, w]`` of a LATENT (read by key).

    Raises:
        ValueError: not a LATENT with 4-channel 4-D samples.
    """
    try:
        samples = latent["samples"]
    except (KeyError, TypeError, IndexError):
        samples = None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 4:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"input {name!r}: expected a LATENT with samples [F, 4, h, w], got {shape}")
    return samples


def to_latent(scaled: torch.Tensor) -> dict:
    """Backend latents (scaled by 0.18215) -> ComfyUI LATENT ``{"samples"}`` (unscaled, as its VAE expects)."""
    from latentsync.vae import VAE_SCALING_FACTOR

    return {"samples": scaled.detach().to("cpu", torch.float32) / VAE_SCALING_FACTOR}


def decode_latent(vae: Any, latent: Mapping, batch_size: int, callback=None) -> torch.Tensor:
    """LATENT (unscaled) -> IMAGE ``[F, 8h, 8w, 3]`` 0..1 through ComfyUI's VAE (see :meth:`ComfyVAE.decode_faces`)."""
    return ComfyVAE(vae).decode_faces(latent_samples(latent), batch_size, callback)


def generated_faces(faces: Any, vae: Any, crops: Any):
    """``(faces(start, n) -> float [n, R, R, 3] 0..1, F)`` from an IMAGE of faces or a LATENT + VAE.

    A LATENT is decoded chunk by chunk as the paste-back asks for it (nothing of size F x R x R is
    held). Raises ValueError: a LATENT without a VAE, or faces of another size than the crops.
    """
    from .comfy_convert import check_faces, check_image

    if isinstance(faces, torch.Tensor):
        images = check_faces(check_image(faces, "faces"), crops)
        return (lambda s, n: images[s:s + n]), int(images.shape[0])
    samples = latent_samples(faces, "faces")
    if vae is None:
        raise ValueError("input 'vae': needed when 'faces' is a LATENT (connect the VAELoader)")
    adapter = ComfyVAE(vae)
    return (lambda s, n: check_faces(adapter.decode_faces(samples[s:s + n]), crops)), int(samples.shape[0])
