"""Bundled model/training configurations (spec 1.2, 2.1, 2.6).

The YAML files in ``latentsync/configs`` mirror the official LatentSync configs key for key
(``data``, ``ckpt``, ``run``, ``optimizer``, ``model`` sections), so an official YAML can be used in
their place. Everything is returned as plain ``dict`` (OmegaConf is only the reader), safe to pass to
``UNet3DConditionModel.from_config``, ``StableSyncNet`` or ``DDIMScheduler.from_config``.

Names accepted by the loaders: a bundled stem (``"stage2_512"``, ``"syncnet_16_pixel_attn"``), a
bundled file name (``"stage2_512.yaml"``), a relative path under ``configs``
(``"unet/stage2_512.yaml"``), or any path to a ``.yaml``/``.yml``/``.json`` file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from latentsync.errors import InvalidInputError

__all__ = [
    "CONFIG_DIR",
    "UNET_CONFIGS",
    "load_config",
    "load_unet_config",
    "load_syncnet_config",
    "unet_model_config",
    "unet_config_name",
    "syncnet_model_config",
    "scheduler_config",
]

#: Folder of the bundled configs.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: Bundled U-Net configs (stems of ``configs/unet/*.yaml``).
UNET_CONFIGS = ("stage1", "stage1_512", "stage2", "stage2_512", "stage2_efficient")
#: Inference U-Net config per face resolution: 256 -> LatentSync 1.5, 512 -> LatentSync 1.6.
_INFERENCE_CONFIG = {256: "stage2", 512: "stage2_512"}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a plain dict (OmegaConf interpolations resolved).

    Raises:
        InvalidInputError: the file is missing or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"config file {path}: not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"config file {path}: invalid JSON ({err})") from err
    else:
        from omegaconf import OmegaConf  # imported lazily: only config reading needs it

        try:
            data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        except Exception as err:  # omegaconf/yaml raise several unrelated types
            raise InvalidInputError(f"config file {path}: cannot parse YAML ({err})") from err
    if not isinstance(data, dict):
        raise InvalidInputError(f"config file {path}: expected a mapping at top level, found {type(data).__name__}")
    return data


def _resolve(name_or_path: str | Path, subdir: str) -> Path:
    """Find a bundled config by stem/name/relative path, else treat the argument as a path."""
    text = str(name_or_path)
    candidates = [Path(text)]
    stem = Path(text).name
    for suffix in ("", ".yaml", ".yml", ".json"):
        candidates.append(CONFIG_DIR / subdir / f"{stem}{suffix}")
        candidates.append(CONFIG_DIR / f"{text}{suffix}")
    for cand in candidates:
        if cand.is_file():
            return cand
    bundled = sorted(p.stem for p in (CONFIG_DIR / subdir).glob("*.yaml"))
    raise InvalidInputError(
        f"config {text!r}: not a file and not a bundled {subdir} config; bundled: {', '.join(bundled)}"
    )


def load_unet_config(name_or_path: str | Path = "stage2_512") -> dict[str, Any]:
    """Full U-Net YAML as a dict (sections ``data``, ``ckpt``, ``run``, ``optimizer``, ``model``).

    Args:
        name_or_path: bundled name (``stage1``, ``stage1_512``, ``stage2``, ``stage2_512``,
            ``stage2_efficient``) or a path to an official/own YAML.

    Raises:
        InvalidInputError: unknown name, unreadable file, or no ``model`` section.
    """
    path = _resolve(name_or_path, "unet")
    cfg = load_config(path)
    if "model" not in cfg or not isinstance(cfg["model"], dict):
        raise InvalidInputError(f"U-Net config {path}: no `model:` section (found sections {sorted(cfg)})")
    return cfg


def unet_config_name(resolution: int) -> str:
    """Bundled inference config stem for a face resolution (256 -> ``stage2``, 512 -> ``stage2_512``).

    Raises:
        InvalidInputError: resolution other than 256 or 512.
    """
    try:
        return _INFERENCE_CONFIG[int(resolution)]
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(
            f"resolution {resolution!r}: expected 256 (LatentSync 1.5) or 512 (LatentSync 1.6)"
        ) from None


def unet_model_config(resolution: int = 512) -> dict[str, Any]:
    """The ``model:`` section of the inference config for ``resolution`` (spec 2.1).

    The sections of ``stage2`` (256) and ``stage2_512`` (512) are identical; the resolution only
    selects the checkpoint (1.5 vs 1.6) and the face size. Returns a fresh dict (safe to modify).
    """
    return copy.deepcopy(load_unet_config(unet_config_name(resolution))["model"])


def load_syncnet_config(name_or_path: str | Path = "syncnet_16_pixel_attn") -> dict[str, Any]:
    """Full SyncNet YAML as a dict (sections ``model``, ``ckpt``, ``data``, ``optimizer``, ``run``)."""
    path = _resolve(name_or_path, "syncnet")
    cfg = load_config(path)
    if "model" not in cfg:
        raise InvalidInputError(f"SyncNet config {path}: no `model:` section (found sections {sorted(cfg)})")
    return cfg


def syncnet_model_config(name_or_path: str | Path = "syncnet_16_pixel_attn") -> dict[str, Any]:
    """The ``model:`` section of a SyncNet config, for :class:`latentsync.models.syncnet.StableSyncNet`."""
    return load_syncnet_config(name_or_path)["model"]


SCHEDULERS = ("ddim", "dpmsolver++")
"""Samplers on the official noise schedule (``latentsync.pipeline.sampler.make_scheduler``): DDIM is the
official one, DPM-Solver++ the fast mode. Names of the CLI ``--scheduler`` and the sampler node."""


def scheduler_config() -> dict[str, Any]:
    """DDIM scheduler settings of the official pipeline (spec 1.2), for ``DDIMScheduler.from_config``."""
    return load_config(CONFIG_DIR / "scheduler_config.json")
