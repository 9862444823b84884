"""Helpers shared by the training / evaluation test files (import as ``from training_helpers import ...``)."""

from __future__ import annotations

from pathlib import Path


def synthetic_clips(tmp_path_factory, name: str, num_videos: int, num_frames: int, seed: int,
                    resolution: int = 64) -> Path:
    """A fresh folder ``name`` of :func:`training.synthetic.make_dataset` clips (64x64 by default)."""
    from training.synthetic import make_dataset

    d = tmp_path_factory.mktemp(name)
    make_dataset(d, num_videos=num_videos, num_frames=num_frames, resolution=resolution, seed=seed)
    return d
