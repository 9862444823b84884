"""Training datasets (spec 3.2, 3.3): deterministic given ``(seed, key)``; see :mod:`.common`."""

from training.datasets.common import list_videos, collate_samples, SkipSample, TooManySkipsError
from training.datasets.syncnet import SyncNetDataset
from training.datasets.unet import UNetDataset

__all__ = ["list_videos", "collate_samples", "SkipSample", "TooManySkipsError", "SyncNetDataset",
           "UNetDataset"]
