"""Tiny random-weight models and weight files in the official formats.

For tests, demos and ``--tiny-random`` runs of the CLI: every file written here has the layout and
format of the real one (so the real loaders are exercised) but megabytes instead of gigabytes, and
random weights (the output is noise, never a lip sync).

* U-Net: the architecture of ``stage2_512`` with narrow blocks (32/64/96/96 channels, 16 GroupNorm
  groups, 4 heads). Its key set equals the real 1246 keys; only shapes differ.
* SyncNet: ``syncnet_16_pixel_attn`` with narrow towers; the key set equals the real 266 keys.
* Whisper: the OpenAI ``{"dims", "model_state_dict"}`` format with the **real** tiny encoder size
  (80 mels, 1500 positions, width 384, 4 layers, 6 heads) so the audio windows are still
  ``[F, 50, 384]``; only the text decoder (unused by LatentSync) is shrunk. float16 like the
  released files.
* VAE: a diffusers ``AutoencoderKL`` folder with the sd-vae-ft-mse structure (4 down/up blocks,
  downscale 8, 4 latent channels, ``scaling_factor`` 0.18215) and narrow blocks.

Zero- and one-initialised tensors (``conv_in``, ``conv_out``, motion-module ``proj_out``, norm
weights and biases) are replaced by random values so that outputs depend on every weight: zero
tensors by N(0, 0.05^2), one tensors by 1 + N(0, 0.1^2) (the recipe of the parity data).

Layout written by :func:`write_tiny_checkpoint_dir` (the official ``checkpoints/`` layout plus
config markers that :mod:`latentsync.checkpoints` honours)::

    latentsync_unet.pt      + latentsync_unet.yaml   (marker: tiny U-Net config, data.resolution 256)
    stable_syncnet.pt       + stable_syncnet.yaml    (marker: tiny SyncNet config)
    whisper/tiny.pt
    sd-vae-ft-mse/config.json, diffusion_pytorch_model.safetensors
    TINY_RANDOM_WEIGHTS.txt (note for humans)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentsync.checkpoints import save_official_checkpoint
from latentsync.models.unet import DEFAULT_UNET_CONFIG

__all__ = [
    "TINY_RESOLUTION",
    "tiny_unet_config",
    "tiny_syncnet_config",
    "tiny_vae_config",
    "tiny_whisper_dims",
    "randomize_constant_tensors",
    "build_tiny_unet",
    "build_tiny_syncnet",
    "build_tiny_whisper",
    "build_tiny_vae",
    "write_tiny_unet_checkpoint",
    "write_tiny_syncnet_checkpoint",
    "write_tiny_whisper_checkpoint",
    "write_tiny_vae",
    "write_tiny_checkpoint_dir",
]

#: Face resolution written into the tiny U-Net's config marker (the tiny U-Net accepts any size
#: that is a multiple of 64 pixels).
TINY_RESOLUTION = 256

#: The official 1.5/1.6 ``model:`` section shrunk as in ``tiny_unet_config.json`` of the parity data:
#: the channel ratios 1:2:3:3 keep ``conv_shortcut`` layers where the real model has them, so the
#: tiny key set equals the real one (only shapes differ).
_TINY_UNET = {
    **DEFAULT_UNET_CONFIG,
    "attention_head_dim": 4,
    "block_out_channels": [32, 64, 96, 96],
    "norm_num_groups": 16,
    "sample_size": 32,
}

_TINY_SYNCNET = {
    "audio_encoder": {
        "in_channels": 1,
        "block_out_channels": [32, 64, 32, 64, 96, 32, 64],
        "downsample_factors": [[2, 1], 2, 2, 1, 2, 2, [2, 3]],
        "attn_blocks": [0, 0, 0, 1, 1, 0, 0],
        "dropout": 0.0,
    },
    "visual_encoder": {
        "in_channels": 48,
        "block_out_channels": [32, 64, 32, 32, 64, 32, 64, 64],
        "downsample_factors": [[1, 2], 2, 2, 2, 2, 2, 2, 2],
        "attn_blocks": [0, 0, 0, 0, 1, 1, 0, 0],
        "dropout": 0.0,
    },
}

_TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 16, 32, 32],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

_TINY_WHISPER_DIMS = {
    # Encoder: the real whisper tiny (spec 2.8) so features are [L, 5, 384] at 50 Hz.
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    # Decoder: unused by LatentSync; shrunk (the full vocabulary keeps it a valid multilingual model).
    "n_vocab": 51865,
    "n_text_ctx": 448,
    "n_text_state": 64,
    "n_text_head": 2,
    "n_text_layer": 1,
}


def tiny_unet_config() -> dict[str, Any]:
    """``model`` config of the tiny U-Net (= ``tests/fixtures/tiny_unet_config.json``), a fresh copy."""
    return copy.deepcopy(_TINY_UNET)


def tiny_syncnet_config() -> dict[str, Any]:
    """``model`` config of the tiny SyncNet (= ``tests/fixtures/tiny_syncnet_config.json``)."""
    return copy.deepcopy(_TINY_SYNCNET)


def tiny_vae_config() -> dict[str, Any]:
    """diffusers ``AutoencoderKL`` config: sd-vae-ft-mse structure, narrow blocks."""
    return copy.deepcopy(_TINY_VAE)


def tiny_whisper_dims() -> dict[str, int]:
    """Whisper ``dims`` of the tiny file: real tiny encoder, shrunk decoder."""
    return dict(_TINY_WHISPER_DIMS)


@torch.no_grad()
def randomize_constant_tensors(module: nn.Module, seed: int = 1) -> int:
    """Replace all-zero tensors by N(0, 0.05^2) and all-one tensors by 1 + N(0, 0.1^2), in place.

    Walks ``named_parameters()`` in order with one generator seeded ``seed`` (the recipe of the
    parity data, so a tiny U-Net built with ``seed=0`` reproduces ``tiny_unet.safetensors``).
    Returns the number of tensors replaced.
    """
    gen = torch.Generator().manual_seed(seed)
    count = 0
    for _, param in module.named_parameters():
        if torch.all(param == 0):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
            count += 1
        elif torch.all(param == 1):
            param.copy_(1 + torch.randn(param.shape, generator=gen) * 0.1)
            count += 1
    return count


def _seeded_build(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_tiny_unet(seed: int = 0):
    """Tiny ``UNet3DConditionModel`` with random non-zero weights everywhere (eval mode, fp32, CPU).

    ``torch.manual_seed(seed)`` (in a forked RNG, the global state is untouched), ``from_config``,
    then :func:`randomize_constant_tensors` with ``seed + 1``. Deterministic for a given seed.
    """
    from latentsync.models.unet import UNet3DConditionModel

    model = _seeded_build(seed, lambda: UNet3DConditionModel.from_config(tiny_unet_config()))
    randomize_constant_tensors(model, seed + 1)
    return model.eval()


def build_tiny_syncnet(seed: int = 0):
    """Tiny ``StableSyncNet`` (64-d embeddings) with random non-constant weights, eval mode."""
    from latentsync.models.syncnet import StableSyncNet

    model = _seeded_build(seed, lambda: StableSyncNet(tiny_syncnet_config()))
    randomize_constant_tensors(model, seed + 1)
    return model.eval()


def build_tiny_whisper(seed: int = 0):
    """``whisper.model.Whisper`` with :func:`tiny_whisper_dims` and random weights (fp32)."""
    from whisper.model import ModelDimensions, Whisper

    model = _seeded_build(seed, lambda: Whisper(ModelDimensions(**tiny_whisper_dims())))
    randomize_constant_tensors(model.encoder, seed + 1)
    return model.eval()


def build_tiny_vae(seed: int = 0):
    """diffusers ``AutoencoderKL`` with :func:`tiny_vae_config` and random weights."""
    from diffusers import AutoencoderKL

    model = _seeded_build(seed, lambda: AutoencoderKL(**tiny_vae_config()))
    randomize_constant_tensors(model, seed + 1)
    return model.eval()


def _write_marker(path: Path, model_cfg: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Config marker beside a checkpoint (YAML, read by latentsync.checkpoints.config_next_to)."""
    from omegaconf import OmegaConf

    marker = path.with_suffix(".yaml")
    doc = {**(extra or {}), "model": model_cfg}
    marker.write_text(
        "# Config of the tiny random-weight model in the checkpoint beside this file (tests/demos only).\n"
        + OmegaConf.to_yaml(OmegaConf.create(doc))
    )
    return marker


def write_tiny_unet_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny U-Net as an official ``latentsync_unet.pt`` plus its ``.yaml`` config marker.

    Returns the checkpoint path. Load it with ``latentsync.checkpoints.load_unet(path)``.
    """
    path = Path(path)
    save_official_checkpoint(build_tiny_unet(seed), path, global_step=0)
    _write_marker(path, tiny_unet_config(), {"data": {"resolution": TINY_RESOLUTION, "num_frames": 16}})
    return path


def write_tiny_syncnet_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny SyncNet as an official ``stable_syncnet.pt`` plus its ``.yaml`` config marker."""
    path = Path(path)
    save_official_checkpoint(
        build_tiny_syncnet(seed), path, global_step=0,
        train_step_list=[], train_loss_list=[], val_step_list=[], val_loss_list=[],
    )
    _write_marker(path, tiny_syncnet_config())
    return path


def write_tiny_whisper_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a whisper checkpoint ``{"dims", "model_state_dict"}`` (float16, like ``tiny.pt``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_tiny_whisper(seed)
    state = {k: v.half() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"dims": tiny_whisper_dims(), "model_state_dict": state}, tmp)
    tmp.replace(path)
    return path


def write_tiny_vae(directory: str | Path, seed: int = 0) -> Path:
    """Write a diffusers VAE folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)."""
    directory = Path(directory)
    build_tiny_vae(seed).save_pretrained(str(directory), safe_serialization=True)
    return directory


def write_tiny_checkpoint_dir(directory: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny ``checkpoints/`` folder in the official layout (module docstring).

    :func:`latentsync.weights.resolve_weights` accepts it offline; ``load_unet`` picks up the tiny
    config from ``latentsync_unet.yaml``. Takes about 1-3 s and ~30 MB.

    Returns: ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tiny_unet_checkpoint(directory / "latentsync_unet.pt", seed)
    write_tiny_syncnet_checkpoint(directory / "stable_syncnet.pt", seed)
    write_tiny_whisper_checkpoint(directory / "whisper" / "tiny.pt", seed)
    write_tiny_vae(directory / "sd-vae-ft-mse", seed)
    (directory / "TINY_RANDOM_WEIGHTS.txt").write_text(
        "This folder holds tiny RANDOM-weight models written by latentsync.models.tiny for tests and\n"
        "demos. They produce noise, not lip sync. Use the real LatentSync checkpoints for real work.\n"
        + json.dumps({"seed": seed}) + "\n"
    )
    return directory
