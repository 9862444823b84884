"""The image autoencoder: loading, batched encode and decode (spec 1.2).

LatentSync uses Stable Diffusion's KL autoencoder ``stabilityai/sd-vae-ft-mse`` (diffusers
``AutoencoderKL``, 8x spatial down-sampling, 4 latent channels). The latent scaling factor is forced to
0.18215 and the shift to 0, whatever the loaded config says; this module is the only place that knows
the factor. Everything else in the project works with *scaled* latents.

    encode:  z = sample(posterior(x)) * 0.18215     (a random sample, not the posterior mean)
    decode:  x = D(z / 0.18215)

Pixels are float ``[N, 3, H, W]`` in [-1, 1] (RGB); latents are ``[N, 4, H/8, W/8]`` (frames as batch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from latentsync.errors import CheckpointError, InvalidInputError

VAE_SCALING_FACTOR = 0.18215
VAE_SHIFT_FACTOR = 0.0

# diffusers config of stabilityai/sd-vae-ft-mse (Stable Diffusion 1.x autoencoder).
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": VAE_SCALING_FACTOR,
}

_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",
)
_SINGLE_FILE_PREFIXES = ("first_stage_model.", "vae.")


def load_vae(
    path_or_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AutoencoderKL:
    """Load the autoencoder from a diffusers folder or from a single weight file, offline.

    Args:
        path_or_dir: either a diffusers folder (``config.json`` + ``diffusion_pytorch_model.*``, e.g. a
            download of ``stabilityai/sd-vae-ft-mse``), or one ``.safetensors`` / ``.ckpt`` / ``.pt`` /
            ``.bin`` file holding the autoencoder weights in diffusers key layout or in the original
            LDM layout (``encoder.down.0.block.0...``, optionally prefixed ``first_stage_model.``, as in
            ``vae-ft-mse-840000-ema-pruned.safetensors``). For a single file the architecture is read
            from the tensor shapes; the network is never contacted.
        device, dtype: where the returned model lives (spec 1.3: fp16 on CUDA capability > 7).

    Returns:
        ``AutoencoderKL`` in eval mode with ``requires_grad`` off and ``config.scaling_factor`` set to
        :data:`VAE_SCALING_FACTOR` (the value used is always the constant of this module).

    Raises:
        MissingWeightsError: the path does not exist.
        CheckpointError: the folder has no config/weights, or the file is not an autoencoder state dict.
    """
    from latentsync.errors import MissingWeightsError

    path = Path(path_or_dir).expanduser()
    if not path.exists():
        raise MissingWeightsError(
            f"VAE: '{path}' does not exist; expected the sd-vae-ft-mse folder (config.json + "
            f"diffusion_pytorch_model.safetensors) or a single .safetensors/.ckpt file"
        )
    if path.is_dir():
        vae = _load_vae_folder(path)
    else:
        vae = _load_vae_file(path)
    vae.register_to_config(scaling_factor=VAE_SCALING_FACTOR, shift_factor=VAE_SHIFT_FACTOR)
    vae.requires_grad_(False)
    # nn.Module.to: diffusers' override only adds a warning about (absent) fp32-only modules.
    return torch.nn.Module.to(vae.eval(), device=device, dtype=dtype)


def _load_vae_folder(path: Path) -> AutoencoderKL:
    if not (path / "config.json").is_file():
        raise CheckpointError(f"VAE folder '{path}' has no config.json (expected a diffusers AutoencoderKL folder)")
    if not any((path / name).is_file() for name in _WEIGHT_NAMES):
        raise CheckpointError(
            f"VAE folder '{path}' has no weights: expected one of {', '.join(_WEIGHT_NAMES)}"
        )
    try:
        return AutoencoderKL.from_pretrained(path, local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"VAE folder '{path}' cannot be loaded as AutoencoderKL: {err}") from err


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from latentsync.checkpoints import load_state_dict_file  # the sole opener of weight files

    return load_state_dict_file(path)


def _vae_config_from_state_dict(sd: dict[str, torch.Tensor], ldm: bool) -> dict[str, Any]:
    """Architecture of an AutoencoderKL deduced from its weight shapes (SD layout assumed otherwise)."""
    if ldm:
        n_blocks = len({k.split(".")[2] for k in sd if k.startswith("encoder.down.")})
        chans = [int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(n_blocks)]
        layers = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
        in_ch = int(sd["encoder.conv_in.weight"].shape[1])
        out_ch = int(sd["decoder.conv_out.weight"].shape[0])
    else:
        n_blocks = len({k.split(".")[2] for k in sd if k.startswith("encoder.down_blocks.")})
        chans = [int(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(n_blocks)]
        layers = len({k.split(".")[4] for k in sd if k.startswith("encoder.down_blocks.0.resnets.")})
        in_ch = int(sd["encoder.conv_in.weight"].shape[1])
        out_ch = int(sd["decoder.conv_out.weight"].shape[0])
    latent = int(sd["quant_conv.weight"].shape[0]) // 2
    cfg = dict(SD_VAE_CONFIG)
    groups = 32 if all(c % 32 == 0 for c in chans) else math.gcd(*chans)
    cfg.update(
        in_channels=in_ch,
        out_channels=out_ch,
        latent_channels=latent,
        block_out_channels=chans,
        down_block_types=["DownEncoderBlock2D"] * n_blocks,
        up_block_types=["UpDecoderBlock2D"] * n_blocks,
        layers_per_block=layers,
        norm_num_groups=groups,
    )
    return cfg


def _load_vae_file(path: Path) -> AutoencoderKL:
    sd = _read_state_dict(path)
    for prefix in _SINGLE_FILE_PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    ldm = "encoder.down.0.block.0.conv1.weight" in sd
    if not ldm and "encoder.down_blocks.0.resnets.0.conv1.weight" not in sd:
        raise CheckpointError(
            f"VAE file '{path}' is not an autoencoder checkpoint: no 'encoder.down.0.block.0.conv1.weight' "
            f"(LDM layout) or 'encoder.down_blocks.0.resnets.0.conv1.weight' (diffusers layout) key "
            f"among its {len(sd)} tensors"
        )
    try:
        cfg = _vae_config_from_state_dict(sd, ldm)
        if ldm:
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            sd = convert_ldm_vae_checkpoint(sd, cfg)
        vae = AutoencoderKL.from_config(cfg)
        vae.load_state_dict(sd, strict=True)
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"VAE file '{path}' does not fit AutoencoderKL: {err}") from err
    return vae


DEFAULT_BATCH_SIZE = 16
"""Images per VAE call on the CPU: the official pipeline decodes a whole 16-frame chunk at once."""

# Activation memory of one SD-VAE encode/decode, bytes per image pixel for a 2-byte dtype: the decoder's
# 512 x 512 stage holds up to four 128-256-channel maps at once (~2 KiB per pixel in fp16).
_ACTIVATION_BYTES_PER_PIXEL = 2048
MAX_AUTO_BATCH_SIZE = 32


def auto_batch_size(device: str | torch.device, resolution: int, dtype: torch.dtype = torch.float32,
                    memory_fraction: float = 0.5) -> int:
    """Images per VAE call that fit the device (VRAM-aware batching).

    Args:
        device: inference device. CPU -> :data:`DEFAULT_BATCH_SIZE`.
        resolution: face size in pixels (256 or 512).
        dtype: VAE dtype (activation size scales with its element size).
        memory_fraction: share of the CUDA device's currently free memory the activations may use.

    Returns:
        On CUDA, ``floor(free * memory_fraction / per_image)`` clamped to ``1..``
        :data:`MAX_AUTO_BATCH_SIZE` (32: a chunk's masked + reference faces in one call), with
        ``per_image = resolution^2 * 2048 * element_size / 2`` bytes (512 MiB per 512 px fp16 face).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return DEFAULT_BATCH_SIZE
    free, _ = torch.cuda.mem_get_info(device)
    element = torch.empty((), dtype=dtype).element_size()
    per_image = resolution * resolution * _ACTIVATION_BYTES_PER_PIXEL * element // 2
    return max(1, min(MAX_AUTO_BATCH_SIZE, int(free * memory_fraction) // per_image))


def _vae_input(x: torch.Tensor, vae: AutoencoderKL) -> torch.Tensor:
    """``x`` on the VAE's device and dtype, NHWC when the VAE's weights are (see ``latentsync.device``).

    Objects with the same interface that are not an ``AutoencoderKL`` (ComfyUI's VAE adapter) get NCHW.
    """
    x = x.to(device=vae.device, dtype=vae.dtype)
    if isinstance(vae, AutoencoderKL) and vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _batches(n: int, batch_size: int):
    if batch_size < 1:
        raise InvalidInputError(f"VAE batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@torch.no_grad()
def encode_frames(
    vae: AutoencoderKL,
    pixels: torch.Tensor,
    generator: torch.Generator | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """Encode images to scaled latents: ``sample(posterior) * 0.18215`` (spec 1.2, 1.9).

    Args:
        vae: the autoencoder from :func:`load_vae`.
        pixels: float ``[N, 3, H, W]`` RGB in [-1, 1], H and W multiples of 8; moved to the VAE's device
            and dtype batch by batch.
        generator: torch generator for the posterior sample (any device; the draw happens on the
            generator's device and is moved). ``None`` uses the global RNG. Batches consume it in order,
            so the result does not depend on ``batch_size``.
        batch_size: images per VAE call (bounds activation memory; see :func:`auto_batch_size`).

    Returns:
        Scaled latents ``[N, 4, H/8, W/8]`` in the VAE's dtype, on the VAE's device.

    Raises:
        InvalidInputError: ``pixels`` is not ``[N, 3, H, W]`` with H, W divisible by 8.
    """
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[2] % 8 or pixels.shape[3] % 8:
        raise InvalidInputError(
            f"encode_frames: pixels must be [N, 3, H, W] with H, W divisible by 8, got {tuple(pixels.shape)}"
        )
    out = []
    for sl in _batches(pixels.shape[0], batch_size):
        x = _vae_input(pixels[sl], vae)
        posterior = vae.encode(x).latent_dist
        z = _sample_posterior(posterior, generator)
        out.append((z - VAE_SHIFT_FACTOR) * VAE_SCALING_FACTOR)
    return torch.cat(out) if out else pixels.new_zeros((0, 4, pixels.shape[2] // 8, pixels.shape[3] // 8))


def _sample_posterior(posterior, generator: torch.Generator | None) -> torch.Tensor:
    """``mean + std * eps``, eps drawn in float32 on the generator's device, then cast and moved.

    For float32 on CPU this is exactly diffusers' ``DiagonalGaussianDistribution.sample(generator)``.
    """
    mean, std = posterior.mean, posterior.std
    gen_device = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=torch.float32)
    return mean + std * eps.to(device=mean.device, dtype=mean.dtype)


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
    """Decode scaled latents to images: ``D(z / 0.18215)`` (spec 1.2, 1.10).

    Args:
        vae: the autoencoder from :func:`load_vae`.
        latents: ``[N, 4, h, w]`` scaled latents (any float dtype / device; moved batch by batch).
        batch_size: latents per VAE call.

    Returns:
        float ``[N, 3, 8h, 8w]`` RGB, nominally in [-1, 1] (not clamped), VAE dtype and device.

    Raises:
        InvalidInputError: ``latents`` is not 4-D with the VAE's latent channel count.
    """
    c = int(vae.config.latent_channels)
    if latents.ndim != 4 or latents.shape[1] != c:
        raise InvalidInputError(f"decode_latents: latents must be [N, {c}, h, w], got {tuple(latents.shape)}")
    out = []
    for sl in _batches(latents.shape[0], batch_size):
        z = _vae_input(latents[sl], vae)
        out.append(vae.decode(z / VAE_SCALING_FACTOR + VAE_SHIFT_FACTOR).sample)
    return torch.cat(out)
