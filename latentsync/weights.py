"""Find (and if allowed, download) the weight files of a LatentSync run (spec 1.2, 2.5, 2.8).

Official layout of a checkpoint folder (what ``hf download ByteDance/LatentSync-1.6 --local-dir
checkpoints`` -- ``huggingface-cli download`` in older hubs -- gives, plus the VAE)::

    checkpoints/
      latentsync_unet.pt                 U-Net (1.6 = 512 px; 1.5 = 256 px)
      [latentsync_unet.yaml]             optional config marker (our own; see latentsync.checkpoints)
      whisper/tiny.pt                    OpenAI whisper tiny
      sd-vae-ft-mse/config.json          stabilityai/sd-vae-ft-mse (diffusers folder)
      sd-vae-ft-mse/diffusion_pytorch_model.safetensors
      [stable_syncnet.pt]                only for training / evaluation

Instead of the VAE folder a single file ``sd-vae-ft-mse.safetensors`` (or the original
``vae-ft-mse-840000-ema-pruned.safetensors``) in the checkpoint folder is accepted, and instead of
``latentsync_unet.pt`` a re-pack ``latentsync_unet.safetensors`` (``.pth``, ``.ckpt``, ``.bin``; the
forms :mod:`latentsync.checkpoints` reads).

Missing files are fetched with ``huggingface_hub`` into the folder when ``download=True`` and the
hub is reachable; offline (``HF_HUB_OFFLINE=1``), with ``download=False`` or on a failed download,
:class:`~latentsync.errors.MissingWeightsError` lists every missing file: where to put it and its URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from latentsync.checkpoints import config_next_to
from latentsync.config import CONFIG_DIR, unet_config_name
from latentsync.errors import MissingWeightsError

__all__ = [
    "WeightPaths",
    "RemoteFile",
    "UNET_REPOS",
    "VAE_REPO",
    "VAE_DIRNAME",
    "resolve_weights",
    "hub_offline",
]

#: Hugging Face repositories of the U-Net (and whisper tiny.pt) per face resolution.
UNET_REPOS = {512: "ByteDance/LatentSync-1.6", 256: "ByteDance/LatentSync-1.5"}
#: Hugging Face repository of the VAE.
VAE_REPO = "stabilityai/sd-vae-ft-mse"
#: Name of the VAE folder inside the checkpoint folder.
VAE_DIRNAME = "sd-vae-ft-mse"
_VAE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_VAE_SINGLE_FILES = ("sd-vae-ft-mse.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors")
_UNET_SUFFIXES = (".pt", ".safetensors", ".pth", ".ckpt", ".bin")  # the official .pt first


@dataclass(frozen=True)
class WeightPaths:
    """Local paths of everything inference needs.

    Attributes:
        unet: ``latentsync_unet.pt`` (or a re-pack ``latentsync_unet.safetensors``, ...).
        whisper: ``whisper/tiny.pt``.
        vae: the diffusers VAE folder (``config.json`` + weights) or a single ``.safetensors`` file.
        unet_config: YAML whose ``model:`` section fits ``unet``: the marker beside the checkpoint if
            present, else the bundled ``stage2.yaml`` (256) / ``stage2_512.yaml`` (512).
        resolution: face resolution the paths were resolved for (256 or 512).
        syncnet: ``stable_syncnet.pt`` when requested, else None.
    """

    unet: Path
    whisper: Path
    vae: Path
    unet_config: Path
    resolution: int = 512
    syncnet: Path | None = None


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: ``repo_id/filename`` -> ``local_dir/filename``."""

    repo_id: str
    filename: str
    local_dir: Path

    @property
    def target(self) -> Path:
        return self.local_dir / self.filename

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (1/true/yes/on)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_hub_download(repo_id: str, filename: str, local_dir: str) -> str:
    """Indirection for tests (monkeypatch this, never the network)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename, local_dir=local_dir)


def _unet_present(checkpoint_dir: Path) -> Path | None:
    return next((p for p in (checkpoint_dir / f"latentsync_unet{s}" for s in _UNET_SUFFIXES) if p.is_file()), None)


def _vae_present(checkpoint_dir: Path) -> Path | None:
    folder = checkpoint_dir / VAE_DIRNAME
    if (folder / "config.json").is_file() and any((folder / w).is_file() for w in _VAE_WEIGHTS):
        return folder
    for name in _VAE_SINGLE_FILES:
        if (checkpoint_dir / name).is_file():
            return checkpoint_dir / name
    return None


def _missing_message(missing: list[RemoteFile], checkpoint_dir: Path, reason: str) -> str:
    lines = [f"weights missing in {checkpoint_dir} ({reason}); put these files there:"]
    for item in missing:
        lines.append(f"  {item.target}  <-  {item.url}")
    lines.append(
        "(or allow downloads: unset HF_HUB_OFFLINE and use download=True; "
        "e.g. `hf download ByteDance/LatentSync-1.6 --local-dir checkpoints`)"
    )
    return "\n".join(lines)


def resolve_weights(
    checkpoint_dir: str | Path,
    resolution: int = 512,
    download: bool = True,
    *,
    include_syncnet: bool = False,
) -> WeightPaths:
    """Locate the weight files in ``checkpoint_dir``, downloading missing ones if allowed.

    Args:
        checkpoint_dir: the checkpoint folder (created if a download is needed).
        resolution: 512 -> LatentSync 1.6 (``ByteDance/LatentSync-1.6``), 256 -> 1.5
            (``ByteDance/LatentSync-1.5``). Only decides which repository a missing U-Net comes from
            and which bundled config is returned; a ``latentsync_unet.pt`` already present is used
            as is.
        download: fetch missing files from Hugging Face.
        include_syncnet: also require ``stable_syncnet.pt`` (training / evaluation).

    Returns: :class:`WeightPaths`.

    Raises:
        InvalidInputError: resolution other than 256/512.
        MissingWeightsError: files missing and not downloadable (offline, ``download=False`` or the
            download failed); the message lists each file's target path and URL.
    """
    config_stem = unet_config_name(resolution)  # validates the resolution
    resolution = int(resolution)
    checkpoint_dir = Path(checkpoint_dir).expanduser()
    repo = UNET_REPOS[resolution]

    wanted = [RemoteFile(repo, "whisper/tiny.pt", checkpoint_dir)]
    if include_syncnet:
        wanted.append(RemoteFile(repo, "stable_syncnet.pt", checkpoint_dir))
    missing = [f for f in wanted if not f.target.is_file()]
    if _unet_present(checkpoint_dir) is None:
        missing.insert(0, RemoteFile(repo, "latentsync_unet.pt", checkpoint_dir))
    if _vae_present(checkpoint_dir) is None:
        vae_dir = checkpoint_dir / VAE_DIRNAME
        missing += [f for f in (RemoteFile(VAE_REPO, "config.json", vae_dir),
                                RemoteFile(VAE_REPO, "diffusion_pytorch_model.safetensors", vae_dir))
                    if not f.target.is_file()]

    if missing:
        if not download:
            raise MissingWeightsError(_missing_message(missing, checkpoint_dir, "downloads disabled"))
        if hub_offline():
            raise MissingWeightsError(_missing_message(missing, checkpoint_dir, "HF_HUB_OFFLINE is set"))
        for i, item in enumerate(missing):
            try:
                item.local_dir.mkdir(parents=True, exist_ok=True)
                _hf_hub_download(item.repo_id, item.filename, str(item.local_dir))
            except Exception as err:  # connection errors, offline mode, 401/404: all end the same way
                reason = f"download of {item.repo_id}/{item.filename} failed: {type(err).__name__}: {err}"
                raise MissingWeightsError(_missing_message(missing[i:], checkpoint_dir, reason)) from err
            if not item.target.is_file():
                raise MissingWeightsError(
                    _missing_message(missing[i:], checkpoint_dir, f"download of {item.filename} gave no file")
                )

    unet = _unet_present(checkpoint_dir) or checkpoint_dir / "latentsync_unet.pt"
    vae = _vae_present(checkpoint_dir)
    if vae is None:  # only if a download reported success without writing the weights
        raise MissingWeightsError(f"VAE in {checkpoint_dir}: {VAE_DIRNAME}/ is incomplete after the download")
    marker = config_next_to(unet)
    return WeightPaths(
        unet=unet,
        whisper=checkpoint_dir / "whisper" / "tiny.pt",
        vae=vae,
        unet_config=marker if marker is not None else CONFIG_DIR / "unet" / f"{config_stem}.yaml",
        resolution=resolution,
        syncnet=(checkpoint_dir / "stable_syncnet.pt") if include_syncnet else None,
    )
