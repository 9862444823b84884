"""Fixed inpainting masks of the aligned face (spec 1.8).

The PNGs in ``latentsync/face/assets`` are the official 256 x 256 masks (Apache-2.0, see the README
there): 0 = mouth region the U-Net regenerates, 255 = region kept from the reference face.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from latentsync.errors import InvalidInputError
from latentsync.face.alignment import check_resolution

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
MASK_NAMES = ("mask.png", "mask2.png", "mask3.png", "mask4.png")


@lru_cache(maxsize=16)
def _load_mask_array(path: str, resolution: int) -> np.ndarray:
    import cv2  # opencv-contrib-python, installed with mediapipe

    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidInputError(f"mask: cannot read image file {path!r} (expected a PNG, 1 = keep, 0 = generate)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    return (image[:, :, 0].astype(np.float64) / 255.0).astype(np.float32)


def load_mask(resolution: int, name: str | Path = "mask.png") -> torch.Tensor:
    """The inpainting mask at ``resolution``, as the official ``load_fixed_mask`` computes it.

    The PNG is read as RGB, resized to ``resolution x resolution`` with OpenCV ``INTER_LANCZOS4``
    (an identity at 256) on uint8 and divided by 255; the first channel is returned. At 512 the
    LANCZOS edges are fractional (not strictly binary); values stay within [0, 1] because the
    resize works on uint8 (saturating).

    Args:
        resolution: 256 or 512.
        name: one of ``mask.png`` (default, used by every official config), ``mask2.png``,
            ``mask3.png``, ``mask4.png`` from the package assets, or a path to another PNG.

    Returns:
        float32 ``[R, R]`` in [0, 1]; 1 = keep, 0 = generate. A new tensor each call.

    Raises:
        InvalidInputError: unsupported resolution, unknown mask name or unreadable file.
    """
    resolution = check_resolution(resolution)
    if str(name) in MASK_NAMES:
        path = ASSETS_DIR / str(name)
    else:
        path = Path(name)
        if not path.is_file():
            raise InvalidInputError(
                f"mask name: expected one of {MASK_NAMES} or an existing PNG path, got {str(name)!r}"
            )
    return torch.from_numpy(_load_mask_array(str(path.resolve()), resolution).copy())
