"""The one place that opens weight files (spec 2.5, 2.6, 2.8).

Forms read (the content decides, never the suffix: ``.pt``, ``.pth``, ``.ckpt``, ``.bin`` and
``.safetensors`` with the same content read the same; nothing is unpickled beyond tensors and plain
containers, ``torch.load(weights_only=True)``):

* official LatentSync ``.pt`` files: ``torch.save({"global_step": int, "state_dict": {...}})``;
* re-packs: a bare ``{name: tensor}`` dict, or the state dict under ``"state_dict"``,
  ``"model_state_dict"``, ``"model"`` or ``"module"``, also one level deeper
  (``{"state_dict": {"state_dict": ...}}``, ``{"model": {"state_dict": ...}}``); ``.safetensors``
  files (their header metadata is kept, ``global_step`` read from it);
* OpenAI Whisper checkpoints ``{"dims": {...}, "model_state_dict": {...}}`` (``whisper/tiny.pt``).

Key names: a prefix shared by every key (DDP ``module.``, ``_orig_mod.``, ``unet.``, ``model.``,
ComfyUI's ``model.diffusion_model.``, ...) is removed when the keys are recognised (kind detection
below) only without it; the shortest such prefix wins and the log says so. LatentSync 1.0 U-Net keys
are renamed to the current names (``audio_cross_attn.attn.`` -> ``attn2.``, ``audio_cross_attn.norm.``
-> ``norm2.``). Tensors keep the file's dtype on reading; the loaders cast to the requested
(inference) dtype, so fp16 / bf16 re-packs load like the fp32 originals.

Kind detection (:func:`detect_kind`) names what a file looks like (LatentSync U-Net of each stage,
SD U-Net, SD single file, SyncNet, OpenAI or transformers Whisper, VAE); a loader given another kind
refuses the file with that name.

Loading rules, as the official loader (``load_state_dict(strict=False)``) where that is harmless:

* keys of the file that are not part of the model (an EMA copy, a leftover buffer, a duplicate
  under another prefix) are ignored with one warning giving their count and the first few; except
  motion-module keys the config has none of (a stage-2 file under a stage-1 config), an error;
* every model key must be in the file with the right shape (the sinusoidal ``pos_encoder.pe``
  buffers of the motion modules excepted: constants the model computes itself); missing keys and
  wrong shapes are errors, never a half-loaded model;
* ``allow_partial=True`` (training only) reproduces the official loader's leniency in full:
  ``conv_in`` / ``conv_out`` with other channel counts and ``attn2.to_k`` / ``attn2.to_v`` with
  another input width are dropped (SD 1.5 initialisation), keys missing from the file keep their
  fresh initialisation (e.g. motion modules when a stage-1 checkpoint starts stage 2). A shape
  mismatch in any other key is still an error.

Config marker: when ``load_unet``/``load_syncnet`` get no config, a file with the checkpoint's stem
and suffix ``.yaml``, ``.yml`` or ``.json`` next to it (``latentsync_unet.yaml`` beside
``latentsync_unet.pt``) is used if present; it may be a full config (with a ``model:`` section) or
the bare ``model`` dict. Otherwise the U-Net config is inferred from the weights (motion modules
present -> ``stage2``/``stage2_512``, only in the up blocks -> ``stage2_efficient``, none ->
``stage1``) and the SyncNet config is ``syncnet_16_pixel_attn``. Whether a U-Net is 1.5 (256 px) or
1.6 (512 px) cannot be read from its tensors; :func:`detect_unet_resolution` reads what the file
states (name, marker, metadata).

Every failure raises :class:`~latentsync.errors.CheckpointError` (or its subclass
:class:`~latentsync.errors.MissingWeightsError` for a missing file) naming the file, what kind of
model the file looks like, and the first mismatching keys with shapes.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import torch
from torch import nn

from latentsync.errors import CheckpointError, MissingWeightsError

if TYPE_CHECKING:  # pragma: no cover
    from latentsync.models.syncnet import StableSyncNet
    from latentsync.models.unet import UNet3DConditionModel

__all__ = [
    "CheckpointFile",
    "LoadReport",
    "KIND_DESCRIPTIONS",
    "read_checkpoint",
    "load_state_dict_file",
    "detect_kind",
    "rename_v1_keys",
    "infer_unet_config",
    "config_next_to",
    "detect_unet_resolution",
    "load_unet_state_dict",
    "load_unet",
    "load_syncnet",
    "load_whisper",
    "save_official_checkpoint",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Kinds of weight files
# ----------------------------------------------------------------------------------------------

UNET_STAGE2 = "latentsync_unet_stage2"
UNET_STAGE2_EFFICIENT = "latentsync_unet_stage2_efficient"
UNET_STAGE1 = "latentsync_unet_stage1"
UNET_V10 = "latentsync_unet_v1.0"
SD_UNET = "sd_unet"
SD_LDM = "sd_ldm_single_file"
SYNCNET = "stable_syncnet"
WHISPER = "whisper"
WHISPER_HF = "whisper_transformers"
VAE = "vae"
UNKNOWN = "unknown"

#: Human-readable name of each kind, used in error messages.
KIND_DESCRIPTIONS = {
    UNET_STAGE2: "a LatentSync 1.5/1.6 U-Net with motion modules (stage 2 / inference)",
    UNET_STAGE2_EFFICIENT: "a LatentSync U-Net with motion modules in the up blocks only (stage2_efficient)",
    UNET_STAGE1: "a LatentSync U-Net without motion modules (stage 1)",
    UNET_V10: "a LatentSync 1.0 U-Net (audio_cross_attn naming, no motion modules)",
    SD_UNET: "a Stable Diffusion U-Net in diffusers layout (text cross-attention, 4 input channels)",
    SD_LDM: "an original Stable Diffusion single-file checkpoint (model.diffusion_model.* keys)",
    SYNCNET: "a StableSyncNet (audio_encoder/visual_encoder)",
    WHISPER: "an OpenAI Whisper checkpoint",
    WHISPER_HF: "a Hugging Face transformers Whisper model (openai/whisper-* layout)",
    VAE: "a VAE (AutoencoderKL)",
    UNKNOWN: "not a recognised model",
}

#: Kinds that load as a LatentSync U-Net (an SD U-Net only initialises training, with allow_partial).
UNET_KINDS = (UNET_STAGE2, UNET_STAGE2_EFFICIENT, UNET_STAGE1, UNET_V10)

_V1_RENAMES = (("audio_cross_attn.attn.", "attn2."), ("audio_cross_attn.norm.", "norm2."))
_PE_SUFFIX = ".pos_encoder.pe"
_UNET_BLOCKS = ("down_blocks.", "mid_block.", "up_blocks.")
#: Entries under which re-packed files keep the state dict (looked up in this order, two levels deep).
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_MAX_LISTED = 5


@dataclass
class CheckpointFile:
    """A weight file after reading.

    Attributes:
        path: the file.
        state_dict: ``{name: tensor}`` on CPU (1.0 names already renamed; Whisper: the
            ``model_state_dict``).
        kind: one of the ``KIND_DESCRIPTIONS`` keys, detected from the keys and shapes.
        global_step: the ``"global_step"`` entry if present.
        extra: other entries of the dict that held the state dict (e.g. Whisper ``dims``; SyncNet loss
            lists); ``"metadata"``: a safetensors header's metadata.
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    kind: str
    global_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return KIND_DESCRIPTIONS.get(self.kind, self.kind)


@dataclass
class LoadReport:
    """What a (possibly partial) load did; all lists are key names."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unexpected_shapes: dict[str, torch.Size] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    """Return 'zip', 'pickle', 'safetensors' or raise CheckpointError describing the content."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"weight file {path}: empty (0 bytes); the download or copy did not finish")
    with path.open("rb") as fh:
        head = fh.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < n < size:
            return "safetensors"
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(
            f"weight file {path}: is a Git LFS pointer ({size} bytes), not the weights; "
            "download the real file (git lfs pull, or huggingface_hub)"
        )
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype", b"<html", b"{", b"<?xml")) or all(32 <= b < 127 or b in b"\r\n\t" for b in head):
        raise CheckpointError(
            f"weight file {path}: is a text file ({size} bytes, starts with {head[:40]!r}), not a PyTorch "
            "(.pt zip/pickle) or safetensors file; a failed download saves an error page like this"
        )
    raise CheckpointError(
        f"weight file {path}: not a PyTorch checkpoint (zip or pickle) or a safetensors file "
        f"(first bytes {head[:16]!r}, {size} bytes)"
    )


def _load_raw(path: Path) -> tuple[Any, dict[str, str]]:
    """Read a file into Python objects (tensors on CPU) with clear errors.

    Returns ``(object, metadata)``; ``metadata`` is the safetensors header's ``__metadata__`` (empty for
    PyTorch files).
    """
    if not path.exists():
        raise MissingWeightsError(f"weight file {path}: not found")
    if path.is_dir():
        raise CheckpointError(f"weight file {path}: is a folder; expected a .pt or .safetensors file")
    fmt = _sniff(path)
    size = path.stat().st_size
    if fmt == "safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
            # The tensors are views of the file mapping at 8-byte offsets; each gets its own (aligned)
            # allocation, as torch.load gives, so that math kernels take the same paths (unaligned
            # weights changed a tiny U-Net's output by 2e-6).
            return {k: v.clone() for k, v in load_file(str(path), device="cpu").items()}, metadata
        except Exception as err:  # SafetensorError is not exported under a stable name
            raise CheckpointError(
                f"weight file {path}: corrupt or truncated safetensors file ({size} bytes): {err}"
            ) from err
    if fmt == "zip":
        try:
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(
                f"weight file {path}: truncated or corrupt PyTorch zip archive ({size} bytes; an "
                f"incomplete download?): {err}"
            ) from err
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError as err:
        msg = str(err)
        if "Weights only load failed" in msg:
            raise CheckpointError(
                f"weight file {path}: contains Python objects other than tensors and plain containers; "
                "it is not an official LatentSync/Whisper checkpoint and is not unpickled for safety"
            ) from err
        raise CheckpointError(f"weight file {path}: not a valid PyTorch pickle ({size} bytes): {msg}") from err
    except (EOFError, RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"weight file {path}: truncated or corrupt PyTorch checkpoint ({size} bytes; an incomplete "
            f"download?): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(torch.is_tensor(v) for v in obj.values())
    )


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _find_state_dict(raw: Any, path: Path) -> tuple[dict[str, torch.Tensor], list[tuple[Mapping[str, Any], str]]]:
    """The ``{name: tensor}`` mapping in a loaded file, and the chain of ``(dict, key)`` that led to it.

    Accepted: a bare state dict; a dict with the state dict under one of :data:`_CONTAINER_KEYS`; the
    same one level deeper (``{"state_dict": {"state_dict": ...}}``, ``{"model": {"state_dict": ...}}``).
    """
    chain: list[tuple[Mapping[str, Any], str]] = []
    obj = raw
    for _ in range(3):  # the file itself, its container, one level deeper
        if _is_tensor_dict(obj):
            return dict(obj), chain
        inner = next((k for k in _CONTAINER_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        chain.append((obj, inner))
        obj = obj[inner]
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"weight file {path}: holds a {type(raw).__name__}, expected a dict with a 'state_dict' entry"
        )
    top = ", ".join(repr(k) for k in list(raw)[:10]) or "none"
    where = "".join(f"[{k!r}]" for _, k in chain)
    raise CheckpointError(
        f"weight file {path}: no state dict (mapping of names to tensors) found"
        + (f" (looked in {where})" if where else "")
        + "; an official LatentSync checkpoint is {'global_step': int, 'state_dict': {...}}, re-packs hold a bare "
        f"state dict or one under {', '.join(map(repr, _CONTAINER_KEYS))} (top-level keys found: {top})"
    )


def _strip_common_prefix(state_dict: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Remove a prefix shared by every key (``module.``, ``unet.``, ``model.diffusion_model.``, ...) when
    the keys are recognised without it and not with it; the shortest such prefix wins. Logged."""
    keys = list(state_dict)
    if detect_kind(state_dict) not in (UNKNOWN, SD_LDM):
        return state_dict
    common = os.path.commonprefix(keys)
    ends = [i + 1 for i, ch in enumerate(common) if ch == "."]
    for end in ends:
        stripped = {k[end:]: v for k, v in state_dict.items()}
        kind = detect_kind(stripped)
        if kind not in (UNKNOWN, SD_LDM):
            logger.info(
                "weight file %s: every key starts with %r; the prefix is removed (the keys then look like %s)",
                path, common[:end], KIND_DESCRIPTIONS[kind],
            )
            return stripped
    return state_dict


def rename_v1_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename LatentSync 1.0 audio cross-attention keys to the current names (spec 2.5).

    ``...transformer_blocks.0.audio_cross_attn.attn.to_q.weight`` ->
    ``...transformer_blocks.0.attn2.to_q.weight``; ``audio_cross_attn.norm.`` -> ``norm2.``.
    Other keys are returned unchanged (same order).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in _V1_RENAMES:
            if old in key:
                key = key.replace(old, new)
        out[key] = value
    return out


def detect_kind(state_dict: Mapping[str, Any], top_level: Mapping[str, Any] | None = None) -> str:
    """Guess what model a state dict belongs to from its keys and shapes.

    Returns one of the keys of :data:`KIND_DESCRIPTIONS`.
    """
    top_level = top_level or {}
    if "dims" in top_level and "model_state_dict" in top_level:
        return WHISPER
    keys = list(state_dict)
    if not keys:
        return UNKNOWN
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return SD_LDM
    if any(k.startswith(("audio_encoder.", "visual_encoder.")) for k in keys):
        return SYNCNET
    if any(k.endswith("encoder.embed_positions.weight") or ("encoder.layers." in k and ".self_attn.k_proj." in k)
           for k in keys):
        return WHISPER_HF
    if "encoder.conv1.weight" in state_dict and any(k.startswith("encoder.blocks.") for k in keys):
        return WHISPER
    if any(k.startswith(("encoder.down_blocks.", "encoder.conv_in.")) for k in keys) and any(
        k.startswith(("decoder.", "quant_conv.", "post_quant_conv.")) for k in keys
    ):
        return VAE
    if "conv_in.weight" in state_dict or any(k.startswith(("down_blocks.", "up_blocks.", "mid_block.")) for k in keys):
        if any("audio_cross_attn." in k for k in keys):
            return UNET_V10
        in_ch = state_dict["conv_in.weight"].shape[1] if "conv_in.weight" in state_dict else None
        widths = {tuple(v.shape)[1] for k, v in state_dict.items() if k.endswith("attn2.to_k.weight")}
        has_mm_down = any(k.startswith("down_blocks.") and ".motion_modules." in k for k in keys)
        has_mm_up = any(k.startswith("up_blocks.") and ".motion_modules." in k for k in keys)
        if has_mm_down:
            return UNET_STAGE2
        if has_mm_up:
            return UNET_STAGE2_EFFICIENT
        if in_ch == 4 or (widths and widths.isdisjoint({384})):
            return SD_UNET
        return UNET_STAGE1
    return UNKNOWN


def read_checkpoint(path: str | Path) -> CheckpointFile:
    """Read any supported weight file into a :class:`CheckpointFile` (tensors on CPU, the file's dtype).

    Accepted forms (the content decides, not the suffix: ``.pt``, ``.pth``, ``.ckpt``, ``.bin`` and
    ``.safetensors`` with the same content read the same): see the module docstring. A prefix shared
    by every key is removed when the keys are recognised only without it (logged); LatentSync 1.0
    names are renamed.

    Raises:
        MissingWeightsError: the file does not exist.
        CheckpointError: empty, truncated, not a zip/pickle/safetensors file, unsafe pickle, or no
            state dict where one is looked for.
    """
    path = Path(path).expanduser()
    raw, metadata = _load_raw(path)
    state_dict, chain = _find_state_dict(raw, path)
    holder, key = chain[-1] if chain else ({}, "")
    global_step = next((h["global_step"] for h, _ in reversed(chain) if "global_step" in h), metadata.get("global_step"))
    extra: dict[str, Any] = {k: v for k, v in holder.items() if k not in (key, "global_step")}
    if metadata:
        extra["metadata"] = metadata
    state_dict = _strip_common_prefix(state_dict, path)
    kind = detect_kind(state_dict, holder)
    if kind == UNET_V10:
        state_dict = rename_v1_keys(state_dict)
    if isinstance(global_step, torch.Tensor):
        global_step = int(global_step.item())
    elif isinstance(global_step, str) and global_step.strip().isdigit():
        global_step = int(global_step)
    return CheckpointFile(path=path, state_dict=state_dict, kind=kind, global_step=global_step, extra=extra)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of an official ``.pt`` (``ckpt["state_dict"]``) or ``.safetensors`` file (spec 2.5).

    Args:
        path: weight file.

    Returns:
        ``{name: tensor}`` on CPU in the file's dtype, LatentSync 1.0 keys renamed to ``attn2``/``norm2``.

    Raises:
        MissingWeightsError / CheckpointError: see :func:`read_checkpoint`.
    """
    return read_checkpoint(path).state_dict


# ----------------------------------------------------------------------------------------------
# Comparing a state dict with a model
# ----------------------------------------------------------------------------------------------


def _shape(shape: Iterable[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _first(items: list[str]) -> str:
    more = f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return "; ".join(items[:_MAX_LISTED]) + more


def _listing(title: str, items: list[str]) -> str:
    return f"\n  {title} ({len(items)}): " + _first(items) if items else ""


def _mismatch_error(
    what: str,
    ckpt: CheckpointFile | None,
    source: str,
    expected: str,
    missing: list[str],
    unexpected: list[str],
    wrong: list[str],
    hint: str = "",
) -> CheckpointError:
    looks = f" The file looks like {ckpt.description}." if ckpt is not None else ""
    msg = (
        f"{what} {source}: does not fit {expected}.{looks}"
        + _listing("wrong shapes (file vs model)", wrong)
        + _listing("missing from the file (model shape)", missing)
        + _listing("unexpected in the file", unexpected)
    )
    if hint:
        msg += "\n  " + hint
    return CheckpointError(msg)


def _compare(
    model_shapes: Mapping[str, torch.Size],
    state_dict: Mapping[str, torch.Tensor],
    allow_partial: bool,
) -> tuple[dict[str, torch.Tensor], LoadReport, list[str]]:
    """Apply the loading rules; returns (tensors to load, report, wrong-shape descriptions)."""
    sd = dict(state_dict)
    report = LoadReport()
    if allow_partial:
        # Official leniency for SD-1.5-style initialisation (spec 2.5).
        w = sd.get("conv_in.weight")
        if w is not None and "conv_in.weight" in model_shapes and w.shape[1] != model_shapes["conv_in.weight"][1]:
            report.dropped += [k for k in ("conv_in.weight", "conv_in.bias") if k in sd]
        w = sd.get("conv_out.weight")
        if w is not None and "conv_out.weight" in model_shapes and w.shape[0] != model_shapes["conv_out.weight"][0]:
            report.dropped += [k for k in ("conv_out.weight", "conv_out.bias") if k in sd]
        for key, value in sd.items():
            if (key.endswith("attn2.to_k.weight") or key.endswith("attn2.to_v.weight")) and key in model_shapes:
                if value.ndim == 2 and value.shape[1] != model_shapes[key][1]:
                    report.dropped.append(key)
        for key in report.dropped:
            sd.pop(key, None)
    wrong: list[str] = []
    for key, value in sd.items():
        if key in model_shapes:
            if tuple(value.shape) != tuple(model_shapes[key]):
                wrong.append(f"{key} {_shape(value.shape)} vs {_shape(model_shapes[key])}")
        else:
            report.unexpected.append(key)
            report.unexpected_shapes[key] = value.shape
    report.missing = [k for k in model_shapes if k not in sd]
    report.loaded = [k for k in sd if k in model_shapes]
    to_load = {k: sd[k] for k in report.loaded}
    return to_load, report, wrong


def _model_shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


def load_unet_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_partial: bool = False,
    source: str = "state dict",
    checkpoint: CheckpointFile | None = None,
) -> LoadReport:
    """Load a U-Net state dict into ``model`` with the rules of this module (strict by default).

    Args:
        model: a built ``UNet3DConditionModel`` (real tensors, not meta).
        state_dict: ``{name: tensor}``.
        allow_partial: the official loader's leniency (see the module docstring); training only.
        source: name of the file, for messages.
        checkpoint: the read file, used to say what kind of model it looks like.

    Returns: :class:`LoadReport`.

    Raises:
        CheckpointError: wrong shapes, missing keys (strict) or unexpected keys (strict).
    """
    shapes = _model_shapes(model)
    to_load, report, wrong = _compare(shapes, state_dict, allow_partial)
    _check_report(shapes, report, wrong, allow_partial, source, checkpoint, "U-Net checkpoint", "the U-Net config")
    model.load_state_dict(to_load, strict=False)
    return report


def _check_report(
    shapes: Mapping[str, torch.Size],
    report: LoadReport,
    wrong: list[str],
    allow_partial: bool,
    source: str,
    ckpt: CheckpointFile | None,
    what: str,
    expected: str,
) -> None:
    missing = [k for k in report.missing if not k.endswith(_PE_SUFFIX)]
    state_shapes = report.unexpected_shapes
    if allow_partial:
        missing, unexpected = [], []
    else:
        # Extra keys are ignored as by the official loader, except motion modules of the model's own
        # blocks that the config lacks: a stage-2 file under a stage-1 / decoder-only config (the
        # temporal layers would silently be left out).
        unexpected = [k for k in report.unexpected if k.startswith(_UNET_BLOCKS) and ".motion_modules." in k]
    if wrong or missing or unexpected:
        hint = ""
        if unexpected:
            hint = "The file has motion modules the config has none of: use a config with use_motion_module (stage2)."
        elif ckpt is not None and ckpt.kind == UNET_STAGE1 and any(".motion_modules." in k for k in missing):
            hint = (
                "A stage-1 checkpoint has no motion modules: use a stage1 config for it, or (training) "
                "load it with allow_partial=True so the motion modules start from their fresh init."
            )
        elif ckpt is not None and ckpt.kind == SD_UNET:
            hint = "Stable Diffusion weights only initialise training: load with allow_partial=True."
        elif wrong:
            hint = "Check that the config (block widths, heads, motion modules) is the one the checkpoint was trained with."
        missing = [f"{k} {_shape(shapes[k])}" for k in missing]
        unexpected = [f"{k} {_shape(state_shapes[k])}" for k in unexpected]
        raise _mismatch_error(what, ckpt, source, expected, missing, unexpected, wrong, hint)
    if report.unexpected and not allow_partial:
        logger.warning(
            "%s %s: %d keys of the file are not part of the model and are ignored, as by the official "
            "loader: %s", what, source, len(report.unexpected),
            _first([f"{k} {_shape(state_shapes[k])}" for k in report.unexpected]),
        )


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------


def config_next_to(path: str | Path) -> Path | None:
    """The config marker file beside a checkpoint (``<stem>.yaml|.yml|.json``), or None."""
    path = Path(path)
    for suffix in (".yaml", ".yml", ".json"):
        cand = path.with_suffix(suffix)
        if cand != path and cand.is_file():
            return cand
    return None


#: Face resolution named in a file, folder or title: LatentSync 1.5 works on 256 px crops, 1.6 on 512 px.
_RESOLUTION_WORDS = (
    (re.compile(r"(?<!\d)(?:1[._-]5|v15|256)(?!\d)"), 256),
    (re.compile(r"(?<!\d)(?:1[._-]6|v16|512)(?!\d)"), 512),
)
_RESOLUTION_ENTRY = re.compile(r"resolution\W{0,4}(256|512)(?!\d)")


def _resolution_in(text: str) -> int | None:
    found = {res for pattern, res in _RESOLUTION_WORDS if pattern.search(text.lower())}
    return found.pop() if len(found) == 1 else None


def detect_unet_resolution(path: str | Path, default: int = 512) -> int:
    """Face resolution a U-Net file states for itself: 256 (LatentSync 1.5) or 512 (1.6), else ``default``.

    The 1.5 and 1.6 weights have the same keys and shapes (spec 0: identical architecture), so the
    tensors cannot tell them apart; what a file can state is read, in this order:

    1. its name, then its folder's name: ``1.5`` / ``v15`` / ``256`` -> 256, ``1.6`` / ``v16`` / ``512``
       -> 512 (words of both kinds -> undecided);
    2. a config marker beside it (:func:`config_next_to`) with ``data.resolution``;
    3. a ``.safetensors`` header's metadata (only the header is read): an entry like ``resolution`` /
       ``modelspec.resolution`` (``512x512``), or a title / name / version naming 1.5 or 1.6.

    The decision and where it came from are logged. Unreadable files give ``default`` (the loader
    reports them).

    Returns: 256 or 512 (or ``default``).
    """
    found, where = _stated_resolution(Path(path))
    if found is None:
        logger.info(
            "U-Net %s: %s says whether it is LatentSync 1.5 or 1.6 (their weights have the same shapes); "
            "assuming %d px; choose the version explicitly if that is wrong", path, where, default,
        )
        return default
    logger.info("U-Net %s: %d px (LatentSync %s), from %s", path, found, "1.5" if found == 256 else "1.6", where)
    return found


def _stated_resolution(path: Path) -> tuple[int | None, str]:
    """(resolution or None, where it was read) for :func:`detect_unet_resolution`."""
    for text, where in ((path.stem, "file name"), (path.parent.name, "folder name")):
        found = _resolution_in(text)
        if found:
            return found, f"the {where} {text!r}"
    marker = config_next_to(path)
    if marker is not None:
        from latentsync.config import load_config

        found = (load_config(marker).get("data") or {}).get("resolution")
        if found in (256, 512):
            return int(found), f"data.resolution in {marker.name}"
    nothing = "nothing in its name, its folder's name or a config beside it"
    try:
        if _sniff(path) != "safetensors":
            return None, nothing
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
    except Exception:  # unreadable files are reported by the loader itself
        return None, nothing
    for key, value in metadata.items():
        match = _RESOLUTION_ENTRY.search(f"{key}={value}".lower())
        if match:
            return int(match.group(1)), f"the metadata entry {key!r}"
    for key, value in metadata.items():
        found = _resolution_in(str(value)) if any(w in key.lower() for w in ("title", "name", "version")) else None
        if found:
            return found, f"the metadata entry {key}={str(value)[:60]!r}"
    return None, nothing + " or in its metadata"


def _model_section(cfg: Any, source: str) -> dict[str, Any]:
    from latentsync.config import load_config

    if isinstance(cfg, (str, Path)):
        text = str(cfg)
        if Path(text).is_file():
            cfg = load_config(text)
        else:
            from latentsync.config import load_unet_config

            cfg = load_unet_config(text)
    if not isinstance(cfg, Mapping):
        raise CheckpointError(f"{source}: config must be a dict, a bundled name or a file, got {type(cfg).__name__}")
    if "model" in cfg and isinstance(cfg["model"], Mapping):
        cfg = cfg["model"]
    return dict(cfg)


def infer_unet_config(ckpt: CheckpointFile, resolution: int | None = None) -> dict[str, Any]:
    """U-Net ``model`` config for a checkpoint when none is given (see the module docstring).

    Args:
        ckpt: the read checkpoint.
        resolution: 256 or 512; cannot be known from weights, default 512 (LatentSync 1.6).

    Raises:
        CheckpointError: the file is not a LatentSync U-Net.
    """
    return _infer_unet_config(ckpt, resolution)[0]


def _infer_unet_config(ckpt: CheckpointFile, resolution: int | None) -> tuple[dict[str, Any], str]:
    """(model config, where it came from) for :func:`infer_unet_config`."""
    from latentsync.config import load_unet_config, unet_config_name

    marker = config_next_to(ckpt.path)
    if marker is not None:
        return _model_section(marker, str(ckpt.path)), f"{marker.name} beside the checkpoint"
    if ckpt.kind in (UNET_STAGE2, SD_UNET):
        name = unet_config_name(resolution or 512)
    elif ckpt.kind == UNET_STAGE2_EFFICIENT:
        name = "stage2_efficient"
    elif ckpt.kind in (UNET_STAGE1, UNET_V10):
        name = "stage1_512" if (resolution or 512) == 512 else "stage1"
    else:
        raise CheckpointError(
            f"U-Net checkpoint {ckpt.path}: the file looks like {ckpt.description}, not a LatentSync U-Net "
            "(expected latentsync_unet.pt from ByteDance/LatentSync-1.5 or -1.6)"
        )
    return load_unet_config(name)["model"], f"bundled {name}.yaml, inferred from the weights"


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------


def _build_and_load(
    build,
    state_dict: Mapping[str, torch.Tensor],
    allow_partial: bool,
    source: str,
    ckpt: CheckpointFile,
    what: str,
    expected: str,
) -> tuple[nn.Module, LoadReport]:
    """Build on the meta device and assign the file's tensors when the file covers the whole model;
    otherwise build with real initialisation and copy the file's tensors in."""
    try:
        with torch.device("meta"):
            meta_model = build()
        shapes = _model_shapes(meta_model)
    except Exception:  # a constructor that cannot run on meta: fall back to a real build
        meta_model, shapes = None, None
    if shapes is None:
        model = build()
        shapes = _model_shapes(model)
    to_load, report, wrong = _compare(shapes, state_dict, allow_partial)
    _check_report(shapes, report, wrong, allow_partial, source, ckpt, what, expected)
    if meta_model is not None and not report.missing:
        meta_model.load_state_dict(to_load, strict=True, assign=True)
        return meta_model, report
    model = build() if meta_model is not None else model
    model.load_state_dict(to_load, strict=False)
    return model, report


def load_unet(
    path: str | Path,
    config: dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    resolution: int | None = None,
    allow_partial: bool = False,
) -> "UNet3DConditionModel":
    """Build the U-Net and load an official checkpoint (spec 2.5).

    Args:
        path: ``latentsync_unet.pt`` (or a ``.safetensors`` / bare state dict file).
        config: U-Net ``model`` section (or a full config dict, a bundled name like ``"stage2_512"``,
            or a YAML path). None: the marker file beside the checkpoint, else inferred from the
            weights (see :func:`infer_unet_config`).
        device, dtype: where and in which dtype the returned model lives (the file is read on CPU).
        resolution: hint for the inferred config (256 -> 1.5, 512 -> 1.6; default 512). The model
            sections of both are identical.
        allow_partial: training only: the official loader's leniency (module docstring).

    Returns: ``UNet3DConditionModel`` in eval mode on ``device`` / ``dtype``; ``.load_report``
    holds the :class:`LoadReport`, ``.checkpoint_global_step`` the file's step.

    Raises:
        MissingWeightsError: no such file.
        CheckpointError: unreadable file, not a U-Net (e.g. a SyncNet or Whisper file), or keys /
            shapes that do not fit the config.
    """
    from latentsync.models.unet import UNet3DConditionModel

    ckpt = read_checkpoint(path)
    if ckpt.kind not in UNET_KINDS and not (allow_partial and ckpt.kind in (SD_UNET, UNKNOWN)):
        hint = "; Stable Diffusion weights only initialise training (allow_partial=True)" if ckpt.kind == SD_UNET else ""
        raise CheckpointError(
            f"U-Net checkpoint {ckpt.path}: the file looks like {ckpt.description}, not a LatentSync "
            f"U-Net (expected latentsync_unet.pt from ByteDance/LatentSync-1.5 or -1.6){hint}"
        )
    if config is None:
        cfg, origin = _infer_unet_config(ckpt, resolution)
        expected = f"the U-Net config ({origin}; pass config= for another one)"
    else:
        cfg = _model_section(config, str(ckpt.path))
        expected = "the U-Net config" + (f" {config}" if isinstance(config, (str, Path)) else "")

    model, report = _build_and_load(
        lambda: UNet3DConditionModel.from_config(cfg),
        ckpt.state_dict,
        allow_partial,
        str(ckpt.path),
        ckpt,
        "U-Net checkpoint",
        expected,
    )
    if report.dropped or (allow_partial and (report.missing or report.unexpected)):
        logger.info(
            "U-Net %s: partial load: %d loaded, %d dropped, %d missing (fresh init), %d unexpected ignored",
            ckpt.path, len(report.loaded), len(report.dropped), len(report.missing), len(report.unexpected),
        )
    model = model.to(device=device, dtype=dtype).eval()
    model.load_report = report
    model.checkpoint_global_step = ckpt.global_step
    return model


def load_syncnet(
    path: str | Path,
    config: dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> "StableSyncNet":
    """Build a StableSyncNet and load ``stable_syncnet.pt`` strictly (spec 2.6).

    Args:
        path: SyncNet checkpoint (``{"state_dict", "global_step", ...}`` or safetensors).
        config: the SyncNet YAML ``model`` section (or full dict / bundled name / YAML path). None:
            the marker file beside the checkpoint, else ``syncnet_16_pixel_attn``.
        device, dtype: placement of the returned model.

    Returns: ``StableSyncNet`` in eval mode.

    Raises:
        MissingWeightsError, CheckpointError (not a SyncNet, keys or shapes do not fit).
    """
    from latentsync.config import load_syncnet_config
    from latentsync.models.syncnet import StableSyncNet

    ckpt = read_checkpoint(path)
    if ckpt.kind != SYNCNET:
        raise CheckpointError(
            f"SyncNet checkpoint {ckpt.path}: the file looks like {ckpt.description}, not a StableSyncNet "
            "(expected stable_syncnet.pt)"
        )
    if config is None:
        marker = config_next_to(ckpt.path)
        cfg = load_syncnet_config(marker if marker is not None else "syncnet_16_pixel_attn")["model"]
    elif isinstance(config, (str, Path)):
        cfg = load_syncnet_config(config)["model"]
    else:
        cfg = dict(config.get("model", config)) if "audio_encoder" not in config else dict(config)
    model, _ = _build_and_load(
        lambda: StableSyncNet(cfg), ckpt.state_dict, False, str(ckpt.path), ckpt, "SyncNet checkpoint",
        "the SyncNet config",
    )
    model = model.to(device=device, dtype=dtype).eval()
    model.checkpoint_global_step = ckpt.global_step
    return model


#: OpenAI Whisper sizes by encoder (width, layers), as in openai-whisper's model list.
_WHISPER_SIZES = {(384, 4): "tiny", (512, 6): "base", (768, 12): "small", (1024, 24): "medium", (1280, 32): "large"}
#: Encoder width -> the Whisper size the U-Net's cross-attention expects (spec 1.2: 384 tiny, 768 small).
_WHISPER_FOR_WIDTH = {384: "tiny", 768: "small"}
_ENGLISH_ONLY_VOCAB = 51864  # the ``.en`` models; the multilingual ones have 51865 tokens (or 51866: large-v3)


def _get_whisper(size: str) -> str:
    """What to download instead, for error messages."""
    if size == "tiny":
        return (
            "get the OpenAI checkpoint tiny.pt: checkpoints/whisper/tiny.pt of ByteDance/LatentSync-1.6 (or -1.5), "
            "or https://openaipublic.azureedge.net/main/whisper/models/"
            "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9/tiny.pt"
        )
    return f"get the OpenAI checkpoint {size}.pt (openai-whisper's model list)"


def _whisper_size(width: int, layers: int, n_mels: int, n_vocab: int) -> str:
    """Name of an OpenAI Whisper size (``tiny``, ``tiny.en``, ``large-v3``, ...) from its dimensions."""
    name = _WHISPER_SIZES.get((int(width), int(layers)))
    if name is None:
        return f"of no OpenAI size (encoder width {width}, {layers} layers)"
    if name == "large" and int(n_mels) == 128:
        return "large-v3"
    return name + ".en" if int(n_vocab) == _ENGLISH_ONLY_VOCAB else name


def _whisper_file_in(folder: Path, wanted: str) -> Path:
    """The Whisper checkpoint a folder stands for, or a CheckpointError saying what the folder is."""
    import json

    config = folder / "config.json"
    if config.is_file():
        try:
            cfg = json.loads(config.read_text())
        except (OSError, ValueError):
            cfg = {}
        if isinstance(cfg, dict) and cfg.get("model_type") == "whisper":
            size = _whisper_size(cfg.get("d_model", 0), cfg.get("encoder_layers", 0), cfg.get("num_mel_bins", 80),
                                 cfg.get("vocab_size", 0))
            raise CheckpointError(
                f"Whisper checkpoint {folder}: is a Hugging Face transformers Whisper folder (Whisper {size}, "
                f"like openai/whisper-{size}); LatentSync reads OpenAI's own format "
                f"{{'dims', 'model_state_dict'}}: {_get_whisper(wanted)}"
            )
    for candidate in (folder / f"{wanted}.pt", folder / "whisper" / f"{wanted}.pt"):
        if candidate.is_file():
            logger.info("Whisper checkpoint %s: is a folder; using %s", folder, candidate)
            return candidate
    raise CheckpointError(
        f"Whisper checkpoint {folder}: is a folder without {wanted}.pt; expected the file itself: {_get_whisper(wanted)}"
    )


def load_whisper(path: str | Path, device: str | torch.device = "cpu", *, encoder_width: int = 384):
    """Load an OpenAI Whisper checkpoint from a local file (spec 2.8), never from the network.

    Equivalent to ``whisper.load_model(<absolute path>, device)``: builds ``whisper.model.Whisper``
    from ``dims`` in float32 and loads ``model_state_dict`` (fp16 / bf16 files are upcast; keys that
    are not part of the model are ignored with a warning, missing keys and wrong shapes are errors).

    Args:
        path: ``checkpoints/whisper/tiny.pt`` (a name such as ``"tiny"`` is refused: it would download),
            or a folder holding ``tiny.pt`` (or ``whisper/tiny.pt``).
        device: target device.
        encoder_width: the U-Net's ``cross_attention_dim``; the Whisper size must match it (spec 1.2:
            384 -> tiny, LatentSync 1.5/1.6; 768 -> small).

    Returns: ``whisper.model.Whisper`` in eval mode.

    Raises:
        MissingWeightsError: no such file.
        CheckpointError: not an OpenAI Whisper checkpoint (a transformers ``openai/whisper-*`` folder or
            file, another model), another size than the U-Net needs (``base``, ``tiny.en``, ...), or
            weights that do not fit ``dims``; the message says what to get instead.
    """
    wanted = _WHISPER_FOR_WIDTH.get(int(encoder_width), f"with encoder width {encoder_width}")
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingWeightsError(f"Whisper checkpoint {path}: not found; {_get_whisper(wanted)}")
    if p.is_dir():
        p = _whisper_file_in(p, wanted)
    ckpt = read_checkpoint(p.resolve())
    if ckpt.kind != WHISPER or "dims" not in ckpt.extra:
        looks = ("holds OpenAI Whisper weights without their 'dims' (a bare re-save)" if ckpt.kind == WHISPER
                 else f"the file looks like {ckpt.description}")
        raise CheckpointError(
            f"Whisper checkpoint {p}: {looks}; expected an OpenAI whisper checkpoint "
            f"{{'dims': {{...}}, 'model_state_dict': {{...}}}}: {_get_whisper(wanted)}"
        )
    from whisper.model import ModelDimensions, Whisper

    try:
        dims = ModelDimensions(**ckpt.extra["dims"])
    except TypeError as err:
        raise CheckpointError(f"Whisper checkpoint {p}: invalid 'dims' {ckpt.extra['dims']!r}: {err}") from err
    size = _whisper_size(dims.n_audio_state, dims.n_audio_layer, dims.n_mels, dims.n_vocab)
    if size != wanted:
        raise CheckpointError(
            f"Whisper checkpoint {p}: is Whisper {size} (encoder width {dims.n_audio_state}, "
            f"{dims.n_audio_layer} layers, {dims.n_mels} mel bins, {dims.n_vocab} tokens); the U-Net's audio "
            f"cross-attention (width {encoder_width}) was trained on Whisper {wanted}: {_get_whisper(wanted)}"
        )
    model = Whisper(dims)
    shapes = _model_shapes(model)
    to_load, report, wrong = _compare(shapes, ckpt.state_dict, False)
    _check_report(shapes, report, wrong, False, str(p), ckpt, "Whisper checkpoint", f"the model built from its dims {ckpt.extra['dims']}")
    model.load_state_dict(to_load, strict=False)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP / DataParallel
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def save_official_checkpoint(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    global_step: int = 0,
    **extra: Any,
) -> Path:
    """Write a checkpoint the official LatentSync code can read (spec 2.5, 3.6), atomically.

    ``.pt``: ``torch.save({"global_step": int, "state_dict": {...}, **extra})``; ``.safetensors``:
    the state dict with ``global_step`` in the metadata (``extra`` must then be empty). Tensors are
    detached, moved to CPU and made contiguous; DDP ``module.`` / compile wrappers are unwrapped. The
    file is written to a temporary name in the same folder, then renamed over ``path``, so a crash
    never leaves a half-written checkpoint.

    Args:
        model_or_state_dict: a module or ``{name: tensor}``.
        path: destination file.
        global_step: training step stored with the weights.
        **extra: more top-level entries (e.g. SyncNet loss lists); must be ``weights_only``-loadable.

    Returns: ``path``.
    """
    path = Path(path)
    if isinstance(model_or_state_dict, nn.Module):
        state = _unwrap(model_or_state_dict).state_dict()
    else:
        state = _strip_prefix(dict(model_or_state_dict), "module.")
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            if extra:
                raise ValueError("save_official_checkpoint: extra entries are not supported for .safetensors")
            save_file(state, tmp, metadata={"format": "pt", "global_step": str(int(global_step))})
        else:
            torch.save({"global_step": int(global_step), "state_dict": state, **extra}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def iter_kinds() -> Iterable[tuple[str, str]]:
    """(kind, description) pairs, for documentation and UIs."""
    return KIND_DESCRIPTIONS.items()
