"""Paste generated faces back into the frames with a feathered mask (spec 1.12).

Per frame: the face (``[-1, 1]`` floats) is resized to the crop size (bicubic, antialias), warped
back with the inverse matrix (kornia, bilinear, fill 127) and mapped to 0..255 by
``(x / 2 + 0.5).clamp(0, 1) * 255``. The paste mask is a ones image of crop size warped the same way
(zero padding), eroded 2 x 2; ``w_edge = int(sqrt(mask area)) // 20``; eroded again by a
``2 w_edge`` square and Gaussian-blurred (kernel ``2 w_edge + 1``,
``sigma = 0.3 ((k - 1) / 2 - 1) + 0.8``). Result ``soft * (eroded * face) + (1 - soft) * frame``,
truncated to uint8. Everything is float32, and only a window around the face is computed (see
:mod:`latentsync.face.warp`), so pixels away from the face are returned bit-exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import invert_affine_transform

from latentsync.errors import InvalidInputError
from latentsync.face.alignment import crop_bbox_in_frame
from latentsync.face.warp import FILL_VALUE, as_uint8_frames, frame_windows, gather_windows, warp_with_fill
from latentsync.types import FaceCrops


def blur_sigma(kernel_size: int) -> float:
    """OpenCV's default Gaussian sigma for a kernel size: ``0.3 ((k - 1) / 2 - 1) + 0.8``."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def paste_margin(bboxes: np.ndarray) -> int:
    """Window margin (px) for paste-back: 4 plus an upper bound of ``w_edge`` (spec 1.12)."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return 4
    area = float(np.max((b[:, 2] - b[:, 0] + 3) * (b[:, 3] - b[:, 1] + 3)))
    return 4 + int(math.sqrt(max(area, 0.0))) // 20 + 1


def soft_paste_mask(inv_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hard and the feathered paste masks from the warped ones image (OpenCV, CPU).

    ``eroded`` = 2 x 2 erosion of ``inv_mask``; ``w_edge = int(sqrt(sum(eroded))) // 20``;
    ``soft`` = Gaussian blur (kernel ``2 w_edge + 1``, :func:`blur_sigma`, border reflect-101 like
    kornia's "reflect") of ``eroded`` eroded by a ``2 w_edge`` square. Erosions follow OpenCV's
    anchor (window ``[p - k // 2, p - k // 2 + k - 1]``) and do not erode at the image border, as
    kornia's geodesic erosion; ``2 w_edge <= 1`` skips the second erosion.

    Args:
        inv_mask: float32 ``[N, h, w]`` ones-image of crop size warped into frame (window) space.

    Returns:
        ``(eroded, soft)``, float32 ``[N, h, w]``: the mask multiplying the face, and the blend
        weight of the face.
    """
    import cv2  # opencv-contrib-python, installed with mediapipe

    eroded = np.empty_like(inv_mask)
    soft = np.empty_like(inv_mask)
    for i in range(inv_mask.shape[0]):
        eroded[i] = cv2.erode(inv_mask[i], np.ones((2, 2), np.uint8))
        w_edge = int(float(eroded[i].sum(dtype=np.float64)) ** 0.5) // 20
        k = 2 * w_edge
        center = cv2.erode(eroded[i], np.ones((k, k), np.uint8)) if k > 1 else eroded[i]
        blur = k + 1
        sigma = blur_sigma(blur)
        soft[i] = (
            cv2.GaussianBlur(center, (blur, blur), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
            if blur > 1
            else center
        )
    return eroded, soft


def paste_faces(
    frames: np.ndarray,
    faces: torch.Tensor,
    affine_matrices: np.ndarray | torch.Tensor,
    crop_size: tuple[int, int],
    device: torch.device | str | None = None,
    indices: list[int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Paste faces into frames (no validation, see :func:`paste_back`).

    Args:
        frames: uint8 ``[M, H, W, 3]`` RGB.
        faces: float ``[N, 3, R, R]`` in ``[-1, 1]`` (the decoded face space), one per pasted frame.
        affine_matrices: ``[N, 2, 3]`` frame -> crop matrices used for the alignment.
        crop_size: ``(W, H)`` of the crop.
        device: torch device for the warps (default CPU).
        indices: the N frames to paste into (default all, N = M).
        out: uint8 ``[M, H, W, 3]`` to write into (may be ``frames`` itself); default a copy.

    Returns:
        ``out``: only the windows around the pasted faces are written.
    """
    indices = list(range(frames.shape[0])) if indices is None else list(indices)
    out = np.array(frames, dtype=np.uint8, copy=True) if out is None else out
    n = len(indices)
    if n == 0:
        return out
    device = torch.device(device) if device is not None else torch.device("cpu")
    crop_w, crop_h = crop_size
    faces = faces.to(device=device, dtype=torch.float32)
    if tuple(faces.shape[-2:]) != (crop_h, crop_w):
        faces = F.interpolate(faces, size=(crop_h, crop_w), mode="bicubic", align_corners=False, antialias=True)

    m = torch.as_tensor(np.asarray(affine_matrices, dtype=np.float32)).reshape(n, 2, 3)
    bboxes = crop_bbox_in_frame(m.double().numpy(), crop_size)
    origins, (win_h, win_w) = frame_windows(bboxes, frames.shape[1:3], margin=paste_margin(bboxes))
    inv = invert_affine_transform(m.to(device))
    # Window pixel (u, v) is frame pixel (u + x0, v + y0): subtract the origin from the translation.
    inv[:, :, 2] -= torch.from_numpy(origins).to(device=device, dtype=torch.float32)

    # The warped ones image is both kornia's fill weight and the official paste mask.
    inv_face, inv_mask = warp_with_fill(faces.contiguous(), inv, (win_h, win_w), FILL_VALUE)
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    eroded, soft = soft_paste_mask(inv_mask[:, 0].cpu().numpy())
    eroded = torch.from_numpy(eroded).to(device).unsqueeze(1)
    soft = torch.from_numpy(soft).to(device).unsqueeze(1)

    windows = torch.from_numpy(gather_windows(frames, origins, (win_h, win_w), indices)).to(device)
    background = windows.permute(0, 3, 1, 2).float()  # channels-last view; the blend is elementwise
    blended = soft * (eroded * inv_face) + (1 - soft) * background
    blended = blended.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for k, (i, (x, y)) in enumerate(zip(indices, origins.tolist())):
        out[i, y : y + win_h, x : x + win_w] = blended[k]
    return out


def _faces_to_unit_range(faces: object, n: int, resolution: int) -> torch.Tensor:
    """Validate ``faces`` and return float32 ``[N, 3, R, R]`` in [-1, 1] (CPU)."""
    if isinstance(faces, np.ndarray):
        faces = torch.from_numpy(faces)
    if not isinstance(faces, torch.Tensor):
        raise InvalidInputError(f"faces: expected a numpy array or torch tensor, got {type(faces).__name__}")
    expected = [n, resolution, resolution, 3]
    if list(faces.shape) != expected:
        raise InvalidInputError(f"faces: expected shape {expected} (one RGB face per frame), got {list(faces.shape)}")
    if faces.dtype == torch.uint8:
        unit = faces.float() / 255.0
    elif faces.is_floating_point():
        unit = faces.float()
    else:
        raise InvalidInputError(f"faces: expected uint8 (0..255) or float (0..1) values, got {faces.dtype}")
    # Same arithmetic as torchvision Normalize(0.5, 0.5) in the official pipeline.
    return ((unit - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def paste_back(
    frames: np.ndarray | torch.Tensor,
    faces: np.ndarray | torch.Tensor,
    crops: FaceCrops,
    device: torch.device | str | None = None,
    batch_size: int = 16,
) -> np.ndarray | torch.Tensor:
    """Paste (generated) aligned faces back into their frames (spec 1.12).

    Args:
        frames: uint8 ``[N, H, W, 3]`` RGB, the frames ``crops`` was computed from (numpy or torch).
        faces: ``[N, R, R, 3]`` RGB faces in aligned-crop space, uint8 0..255 or float 0..1
            (numpy or torch); entries of frames listed in ``crops.no_face_indices`` are ignored.
        crops: the :class:`~latentsync.types.FaceCrops` of these frames; ``frames[i]`` is video frame
            ``crops.start_index + i`` (``no_face_indices`` are absolute).
        device: torch device for the warps (default CPU).
        batch_size: frames per batched warp.

    Returns:
        uint8 ``[N, H, W, 3]``, numpy if ``frames`` is numpy, else a CPU torch tensor. Frames in
        ``crops.no_face_indices`` are returned unchanged; elsewhere only the face region changes.

    Raises:
        InvalidInputError: naming ``frames``, ``faces`` or ``crops`` when a type, dtype or shape does
            not match.
    """
    if not isinstance(crops, FaceCrops):
        raise InvalidInputError(f"crops: expected a FaceCrops from FaceAligner.align, got {type(crops).__name__}")
    was_torch = isinstance(frames, torch.Tensor)
    arr = as_uint8_frames(frames, "frames")
    n = arr.shape[0]
    if n != len(crops):
        raise InvalidInputError(f"frames: expected {len(crops)} frames (len(crops)), got {n}")
    if tuple(arr.shape[1:3]) != tuple(crops.frame_size):
        raise InvalidInputError(
            f"frames: expected frame size (H, W) = {tuple(crops.frame_size)} (crops.frame_size), "
            f"got {tuple(arr.shape[1:3])}"
        )
    unit_faces = _faces_to_unit_range(faces, n, crops.resolution)
    matrices = torch.as_tensor(crops.affine_matrices).detach().cpu().float().numpy().reshape(n, 2, 3)
    if batch_size < 1:
        raise InvalidInputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")

    start = int(getattr(crops, "start_index", 0))
    skip = set(int(i) - start for i in crops.no_face_indices)
    if any(not 0 <= i < n for i in skip):
        raise InvalidInputError(
            f"crops: no_face_indices {sorted(crops.no_face_indices)} do not lie in the frames "
            f"[{start}, {start + n}) that crops.start_index = {start} and {n} frames cover"
        )
    out = np.array(arr, copy=True)
    todo = [i for i in range(n) if i not in skip]
    for first in range(0, len(todo), batch_size):
        idx = todo[first : first + batch_size]
        paste_faces(arr, unit_faces[idx], matrices[idx], crops.crop_size, device=device, indices=idx, out=out)
    return torch.from_numpy(out) if was_torch else out
