"""ComfyUI model services: the ``models/latentsync`` folder, its file lists, devices, ModelPatcher.

ComfyUI modules (``comfy.*``, ``folder_paths``) are imported inside the functions, never at import
time: this module must import under pytest without ComfyUI (tests stub those modules).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

MODEL_FOLDER = "latentsync"
"""``folder_paths`` key and the folder name under ComfyUI's ``models/``."""

WEIGHT_EXTENSIONS = {".pt", ".pth", ".ckpt", ".safetensors", ".bin"}
WHISPER_SUBFOLDER = "whisper"


# ------------------------------------------------------------------------------------------------
# model folder
# ------------------------------------------------------------------------------------------------

def register_model_folder() -> None:
    """Make ``models/latentsync`` a ComfyUI model folder without disturbing a user's settings.

    ``extra_model_paths.yaml`` is read before custom nodes load, so a user's ``latentsync:`` entries
    may already exist (and may be marked default, i.e. first). The default folder is then appended
    behind them, never put in front; a folder already listed is left where it is. An entry created by
    the yaml has no extension filter; it gets the weight-file extensions.
    """
    import folder_paths

    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    entry = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([default], set(WEIGHT_EXTENSIONS))
        return
    paths, extensions = entry
    if default not in paths:
        paths.append(default)
    if isinstance(extensions, set) and not extensions:
        extensions.update(WEIGHT_EXTENSIONS)


def _model_files() -> list[str]:
    import folder_paths

    try:
        return list(folder_paths.get_filename_list(MODEL_FOLDER))
    except KeyError:
        return []


def _is_whisper(name: str) -> bool:
    """Whisper by name: under ``whisper/``, ``whisper`` in the name, or OpenAI's ``tiny.pt`` / ``tiny.en.pt``."""
    low = name.replace("\\", "/").lower()
    return WHISPER_SUBFOLDER in low or low.rsplit("/", 1)[-1] in ("tiny.pt", "tiny.en.pt")


def list_unet_files() -> list[str]:
    """U-Net checkpoints in the ``latentsync`` model folders (relative names, sorted).

    Every weight file of any name (``WEIGHT_EXTENSIONS``; e.g. re-packed ``*.safetensors``) except,
    by name, Whisper (:func:`_is_whisper`), SyncNet (``*syncnet*``) and VAE files or folders
    (``*vae*``). A wrong pick is refused at load time, naming what the file looks like.
    """
    out = []
    for name in _model_files():
        low = name.replace("\\", "/").lower()
        if _is_whisper(low) or "syncnet" in low or "vae" in low.rsplit("/", 1)[0]:
            continue
        out.append(name)
    return out


def list_whisper_files() -> list[str]:
    """Whisper checkpoints by name (:func:`_is_whisper`): ``whisper/tiny.pt``, ``whisper-tiny.pt``, ``tiny.pt``."""
    return [n for n in _model_files() if _is_whisper(n)]


def model_folders() -> list[str]:
    """The ``latentsync`` model folders in ComfyUI's order (extra_model_paths entries included);
    the face stage looks for ``face_landmarker.task`` there first."""
    import folder_paths

    try:
        return list(folder_paths.get_folder_paths(MODEL_FOLDER))
    except KeyError:
        return []


def full_model_path(name: str) -> str:
    """Absolute path of a file of the ``latentsync`` folders (ValueError naming the folders)."""
    import folder_paths

    path = folder_paths.get_full_path(MODEL_FOLDER, name)
    if path is None:
        raise ValueError(
            f"model file {name!r} not found in the latentsync model folders "
            f"{folder_paths.get_folder_paths(MODEL_FOLDER)}; put it under models/latentsync/"
        )
    return path


def unet_resolution_for(path: str, version: str) -> int:
    """Face-crop resolution R for a U-Net file and the loader's version choice (see loaders.VERSIONS).

    ``auto``: what the file states (``latentsync.checkpoints.detect_unet_resolution``: its name or
    folder, a config beside it, safetensors metadata), else 512 (1.6).

    Raises:
        ValueError: an unknown version string.
    """
    if version.startswith("1.6"):
        return 512
    if version.startswith("1.5"):
        return 256
    if version != "auto":
        raise ValueError(f"input 'version': expected one of auto, 1.6 (512), 1.5 (256), got {version!r}")
    from latentsync.checkpoints import detect_unet_resolution

    return detect_unet_resolution(path)


# ------------------------------------------------------------------------------------------------
# devices and model management
# ------------------------------------------------------------------------------------------------

def torch_device() -> torch.device:
    """The compute device ComfyUI chose (``--cpu`` -> cpu)."""
    import comfy.model_management as mm

    return mm.get_torch_device()


def inference_dtype(device: torch.device) -> torch.dtype:
    """float16 where ComfyUI would use it for this device (spec 1.3: fp16 on Ampere+), else float32."""
    import comfy.model_management as mm

    if device.type == "cpu":
        return torch.float32
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


class ManagedModule(torch.nn.Module):
    """Container handed to ComfyUI's ``ModelPatcher``.

    The patcher records the current device by assigning ``model.device``; diffusers-style models and
    openai-whisper's ``Whisper`` expose ``device`` as a read-only property, so they are wrapped in a
    plain module that owns them as ``inner`` (moving the container moves them).
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.device = next(inner.parameters()).device


def wrap_model(module: torch.nn.Module) -> Any:
    """A ``comfy.model_patcher.ModelPatcher`` around ``module`` (inside a :class:`ManagedModule`).

    Load device = ComfyUI's torch device, offload device = its U-Net offload device, so
    ``load_models_gpu`` moves the module in before use and ComfyUI can evict it when another model
    needs the memory (the pattern of ComfyUI's own audio/CLIP-vision encoders).
    """
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(
        ManagedModule(module), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def load_model(patcher: Any) -> torch.nn.Module:
    """Load the patcher's module onto its device through ComfyUI's model management; returns it."""
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    return patcher.model.inner


@dataclass
class LatentSyncModel:
    """Value of the ``LATENTSYNC_MODEL`` socket: the U-Net under ComfyUI model management.

    Attributes:
        patcher: ``ModelPatcher`` around ``UNet3DConditionModel``.
        config: the resolved U-Net config (official YAML ``model:`` keys).
        resolution: face crop size R the model was trained for (256 for 1.5, 512 for 1.6).
        name: checkpoint file name (for messages).
    """

    patcher: Any
    config: dict
    resolution: int
    name: str


@dataclass
class WhisperModel:
    """Value of the ``LATENTSYNC_WHISPER`` socket: openai-whisper model under model management."""

    patcher: Any
    name: str


def check_model_resolution(model: LatentSyncModel, crops: Any) -> None:
    """The face crops must have the resolution the U-Net was trained for (ValueError naming the fix)."""
    if int(crops.resolution) != int(model.resolution):
        raise ValueError(
            f"input 'face_crops' are {crops.resolution}x{crops.resolution} but the model "
            f"{model.name!r} works on {model.resolution}x{model.resolution} faces; set the resolution "
            f"of 'LatentSync Face Crop & Align' to {model.resolution}"
        )
