"""Batched affine warps of frames into face crops (spec 1.7), and the frame windows they need.

Only the part of each frame that the crop can sample is converted to float32 and warped: a
"window" (the crop's bounding box in the frame plus a margin, clipped to the frame). The result
equals warping the whole frame, because bilinear sampling never reaches past the margin, and the
window edges that are not frame edges lie outside everything sampled. This keeps a chunk of
1080 x 1920 frames at a few MB of float32 instead of ~25 MB per frame.
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.transform import warp_affine

from latentsync.errors import InvalidInputError
from latentsync.face.alignment import crop_bbox_in_frame

FILL_VALUE = 127.0  # grey fill outside the frame, all channels (spec 1.7)


def as_uint8_frames(frames: object, name: str = "frames") -> np.ndarray:
    """Validate a batch of RGB frames and return it as a uint8 numpy ``[N, H, W, 3]`` (no copy if possible).

    Args:
        frames: uint8 ``[N, H, W, 3]`` numpy array or torch tensor (any device).
        name: the input's name for error messages.

    Raises:
        InvalidInputError: naming ``name`` for another type, dtype or shape.
    """
    if isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise InvalidInputError(f"{name}: expected dtype uint8 [N, H, W, 3] (RGB 0..255), got {frames.dtype}")
        frames = frames.detach().cpu().numpy()
    elif not isinstance(frames, np.ndarray):
        raise InvalidInputError(f"{name}: expected a uint8 numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise InvalidInputError(f"{name}: expected dtype uint8 [N, H, W, 3] (RGB 0..255), got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[1:3]) < 1:
        raise InvalidInputError(f"{name}: expected shape [N, H, W, 3] (RGB), got {list(frames.shape)}")
    return frames


def frame_windows(
    bboxes: np.ndarray, frame_size: tuple[int, int], margin: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """One common window size for a batch, and each frame's window origin.

    Args:
        bboxes: float ``[N, 4]`` ``(x0, y0, x1, y1)`` frame-pixel regions that must be covered.
        frame_size: ``(H, W)`` of the frames.
        margin: pixels added on every side before clipping to the frame.

    Returns:
        ``(origins, (h, w))``: int64 ``[N, 2]`` ``(x, y)`` top-left corners and the common window
        size; every window lies inside the frame and contains its clipped, margin-grown bbox.
    """
    height, width = frame_size
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    # At least 4 x 4 (or the frame): kornia normalises coordinates by (size - 1).
    min_w, min_h = min(4, width), min(4, height)
    x0 = np.clip(np.floor(b[:, 0]) - margin, 0, width - min_w).astype(np.int64)
    y0 = np.clip(np.floor(b[:, 1]) - margin, 0, height - min_h).astype(np.int64)
    x1 = np.maximum(np.clip(np.ceil(b[:, 2]) + margin + 1, 0, width).astype(np.int64), x0 + min_w)
    y1 = np.maximum(np.clip(np.ceil(b[:, 3]) + margin + 1, 0, height).astype(np.int64), y0 + min_h)
    win_w, win_h = int((x1 - x0).max()), int((y1 - y0).max())
    origins = np.stack([np.minimum(x0, width - win_w), np.minimum(y0, height - win_h)], axis=1)
    return origins, (win_h, win_w)


def gather_windows(
    frames: np.ndarray, origins: np.ndarray, size: tuple[int, int], indices: list[int] | None = None
) -> np.ndarray:
    """Copy windows out of frames.

    Args:
        frames: ``[M, H, W, C]``.
        origins: int ``[N, 2]`` (x, y) top-left corners.
        size: ``(h, w)`` of every window.
        indices: the frame of each window (default ``range(N)``).

    Returns:
        ``[N, h, w, C]``, same dtype.
    """
    h, w = size
    indices = list(range(len(origins))) if indices is None else indices
    return np.stack([frames[i, y : y + h, x : x + w] for i, (x, y) in zip(indices, origins.tolist())])


def warp_with_fill(
    src: torch.Tensor, matrices: torch.Tensor, dsize: tuple[int, int], fill_value: float = FILL_VALUE
) -> tuple[torch.Tensor, torch.Tensor]:
    """kornia ``warp_affine`` (bilinear) with a constant fill, also returning the coverage mask.

    Equals ``warp_affine(src, M, dsize, padding_mode="fill", fill_value=...)``, which warps a ones
    image with zero padding and adds ``(1 - warped_ones) * fill``; here the ones image travels as an
    extra channel of the same warp (one sampling pass instead of two).

    Args:
        src: float32 ``[N, C, H, W]``.
        matrices: float32 ``[N, 2, 3]`` source -> destination pixel matrices.
        dsize: ``(h, w)`` of the output.
        fill_value: value outside the source, all channels.

    Returns:
        ``(warped, coverage)``: float32 ``[N, C, h, w]`` filled warp and ``[N, 1, h, w]`` warped ones.
    """
    ones = torch.ones_like(src[:, :1])
    warped = warp_affine(torch.cat([src, ones], dim=1), matrices, dsize, mode="bilinear", padding_mode="zeros")
    image, coverage = warped[:, :-1], warped[:, -1:]
    return image + (1 - coverage) * fill_value, coverage


def warp_to_crops(
    frames: np.ndarray,
    affine_matrices: np.ndarray,
    crop_size: tuple[int, int],
    device: torch.device | str | None = None,
    indices: list[int] | None = None,
) -> torch.Tensor:
    """Warp each frame into its face crop: kornia ``warp_affine``, bilinear, fill 127, float32.

    The float result is truncated to uint8 (as ``.astype(np.uint8)`` in the official code).

    Args:
        frames: uint8 ``[M, H, W, 3]`` RGB frames (numpy, C-contiguous or not).
        affine_matrices: float ``[N, 2, 3]`` frame -> crop pixel matrices, one per warped frame.
        crop_size: ``(W, H)`` of the crop, e.g. (210, 280).
        device: torch device for the warp (default CPU).
        indices: the N frames to warp (default all, N = M); avoids copying whole frames.

    Returns:
        uint8 CPU tensor ``[N, H_crop, W_crop, 3]``.
    """
    indices = list(range(frames.shape[0])) if indices is None else list(indices)
    n = len(indices)
    crop_w, crop_h = crop_size
    if n == 0:
        return torch.zeros((0, crop_h, crop_w, 3), dtype=torch.uint8)
    matrices = np.asarray(affine_matrices, dtype=np.float64).reshape(n, 2, 3)
    bboxes = crop_bbox_in_frame(matrices, crop_size)
    origins, size = frame_windows(bboxes, frames.shape[1:3], margin=2)
    windows = torch.from_numpy(gather_windows(frames, origins, size, indices))
    # Window pixel (u, v) is frame pixel (u + x0, v + y0): M_win = M @ translate(x0, y0).
    shifted = matrices.copy()
    shifted[:, :, 2] += np.einsum("nij,nj->ni", matrices[:, :, :2], origins.astype(np.float64))
    device = torch.device(device) if device is not None else torch.device("cpu")
    src = windows.to(device=device).permute(0, 3, 1, 2).float().contiguous()
    m = torch.from_numpy(shifted).to(device=device, dtype=torch.float32)
    out, _ = warp_with_fill(src, m, (crop_h, crop_w))
    return out.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()


def resize_crops(crops: torch.Tensor | np.ndarray, resolution: int) -> torch.Tensor:
    """Resize uint8 crops ``[N, h, w, 3]`` to ``[N, R, R, 3]`` with OpenCV ``INTER_LANCZOS4`` (spec 1.7).

    The scale is non-uniform (210 x 280 -> 256 x 256). Returns a uint8 CPU tensor.
    """
    import cv2  # opencv-contrib-python, installed with mediapipe

    arr = crops.numpy() if isinstance(crops, torch.Tensor) else np.asarray(crops)
    out = np.empty((arr.shape[0], resolution, resolution, 3), dtype=np.uint8)
    for i in range(arr.shape[0]):
        out[i] = cv2.resize(arr[i], (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    return torch.from_numpy(out)

