"""Helpers of the evaluation commands: SyncNet loading from a config + checkpoint, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

DEFAULT_SYNCNET_CONFIG = "latentsync/configs/syncnet/syncnet_16_pixel_attn.yaml"


def load_syncnet_from_config(checkpoint: str, config: str | None = None,
                             device: str | torch.device = "cpu") -> tuple[torch.nn.Module, int]:
    """``(StableSyncNet in eval mode, face resolution)`` from a SyncNet YAML (``model`` section and
    ``data.resolution``) and an official-format checkpoint.

    Raises:
        MissingWeightsError / CheckpointError: absent or mismatching checkpoint.
    """
    from latentsync.checkpoints import load_syncnet

    cfg_path = Path(config or DEFAULT_SYNCNET_CONFIG)
    if not cfg_path.is_file():
        import latentsync

        cfg_path = Path(latentsync.__file__).resolve().parent.parent / cfg_path
    cfg = OmegaConf.load(cfg_path)
    res = int(cfg.data.resolution) if "data" in cfg and "resolution" in cfg.data else 256
    model = load_syncnet(checkpoint, OmegaConf.to_container(cfg.model, resolve=True))
    return model.to(device).eval(), res


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=None, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    sys.stdout.write("\n")
    sys.stdout.flush()
