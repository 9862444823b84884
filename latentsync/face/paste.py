"""Paste generated faces back into the frames with a feathered mask (spec 1.12).

Per frame: the face (``[-1, 1]`` floats) is resized to the crop size (bicubic, antialias), warped
back with the inverse matrix (kornia, bilinear, fill 127) and mapped to 0..255 by
``(x / 2 + 0.5).clamp(0, 1) * 255``. The paste mask is a ones image of crop size warped the same way
(zero padding), eroded 2 x 2; ``w_edge = int(sqrt(mask area)) // 20``; eroded again by a
``2 w_edge`` square and Gaussian-blurred (kernel ``2 w_edge + 1``,
``sigma = 0.3 ((k - 1) / 2 - 1) + 0.8``). Result ``soft * (eroded * face) + (1 - soft) * frame``,
truncated to uint8. Everything is float32, and only a window around the face is computed (see
:mod:`latentsync.face.warp`), so pixels away from the face are returned bit-exact.

Paste modes (``mode``, beyond the official code):

* ``"full"``: the official restore above. The whole aligned face goes back, so the upper face,
  which the model did not generate, is resampled twice (forward and inverse warp).
* ``"mouth"``: only the generated region goes back. The mask's generate area ``1 - mask``
  (resized to the crop size, bilinear) is warped into the frame like the ones image and feathered
  by the same rule (2 x 2 erosion, erosion by ``2 w_edge``, Gaussian blur of ``2 w_edge + 1``,
  ``w_edge`` from its own area), so the feather lies inside the generated area; the result is
  ``soft * face + (1 - soft) * frame``. Where ``soft`` is 0 (everything outside the inverse-warped,
  feathered generated region) the frame is returned bit-exact.

Colour matching (``colour_match``, mouth mode): before blending, each channel of the warped face
is shifted and scaled so that its mean and standard deviation over the seam band (the feather zone,
``0 < soft < 0.999``, where face and frame are mixed and should agree) equal those of the frame over
the same pixels (gain clipped to 0.5..2). Comparing the same pixels, rather than a ring outside
the seam with a ring inside, does not mistake the skin's own shading for a cast. Chosen over
Poisson blending (OpenCV ``seamlessClone``), which also removes a cast but solves a sparse system
per frame (several times slower at 1080p) and bleeds the surrounding colour into the mouth.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import invert_affine_transform, warp_affine

from latentsync.errors import InvalidInputError
from latentsync.face.alignment import crop_bbox_in_frame
from latentsync.face.warp import FILL_VALUE, as_uint8_frames, frame_windows, gather_windows, warp_with_fill
from latentsync.types import FaceCrops

PASTE_MODES = ("full", "mouth")
PASTE_MODE_HELP = (
    "mouth: paste back only the generated (mouth) region, feathered, every other pixel bit-exact; "
    "full: the official restore of the whole aligned face (upper face resampled twice)"
)
MAX_GAIN = 2.0  # colour matching: limit of the per-channel gain (and 1 / MAX_GAIN)
SEAM_CORE = 0.999  # blend weight from which a pixel counts as fully pasted (the blur never gives exactly 1)


def match_colour(face: torch.Tensor, frame: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Per-channel mean/std matching of ``face`` to ``frame`` over ``band`` (see the module docstring).

    Args:
        face, frame: float32 ``[N, 3, h, w]`` 0..255, the warped face and the frame window.
        band: bool ``[N, 1, h, w]``, the pixels compared.

    Returns:
        float32 ``[N, 3, h, w]`` corrected face, clamped to 0..255 (``face`` itself where a band has
        fewer than 16 pixels).
    """
    w = band.to(face.dtype)
    count = w.sum(dim=(2, 3), keepdim=True)
    safe = count.clamp(min=1)
    mean_f, mean_b = (face * w).sum((2, 3), keepdim=True) / safe, (frame * w).sum((2, 3), keepdim=True) / safe
    std_f = (((face - mean_f) ** 2 * w).sum((2, 3), keepdim=True) / safe).sqrt()
    std_b = (((frame - mean_b) ** 2 * w).sum((2, 3), keepdim=True) / safe).sqrt()
    gain = (std_b / std_f.clamp(min=1e-3)).clamp(1.0 / MAX_GAIN, MAX_GAIN)
    matched = ((face - mean_f) * gain + mean_b).clamp(0, 255)
    return torch.where(count >= 16, matched, face)


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
    mode: str = "full",
    mask: torch.Tensor | None = None,
    colour_match: bool = False,
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
        mode: "full" (official) or "mouth" (module docstring).
        mask: float ``[R, R]`` inpainting mask (1 keep, 0 generate), needed for "mouth".
        colour_match: match the face's colour to the frame on the seam band ("mouth" only).

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

    inv, origins, (win_h, win_w) = _inverse_window_matrices(affine_matrices, crop_size, frames.shape[1:3], device)

    # The warped ones image is both kornia's fill weight and the official paste mask.
    inv_face, inv_mask = warp_with_fill(faces.contiguous(), inv, (win_h, win_w), FILL_VALUE)
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    windows = torch.from_numpy(gather_windows(frames, origins, (win_h, win_w), indices)).to(device)
    background = windows.permute(0, 3, 1, 2).float()  # channels-last view; the blend is elementwise
    if mode == "mouth":
        soft = _generated_weight(mask, inv, crop_size, (win_h, win_w))
        if colour_match:
            inv_face = match_colour(inv_face, background, (soft > 0) & (soft < SEAM_CORE))
        blended = soft * inv_face + (1 - soft) * background
    else:
        eroded, soft = soft_paste_mask(inv_mask[:, 0].cpu().numpy())
        eroded = torch.from_numpy(eroded).to(device).unsqueeze(1)
        soft = torch.from_numpy(soft).to(device).unsqueeze(1)
        blended = soft * (eroded * inv_face) + (1 - soft) * background
    blended = blended.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for k, (i, (x, y)) in enumerate(zip(indices, origins.tolist())):
        out[i, y : y + win_h, x : x + win_w] = blended[k]
    return out


def _inverse_window_matrices(
    affine_matrices: np.ndarray | torch.Tensor, crop_size: tuple[int, int], frame_size: tuple[int, int], device
) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """Crop -> frame-window matrices ``[N, 2, 3]``, the windows' origins and their common size."""
    m = torch.as_tensor(np.asarray(affine_matrices, dtype=np.float32)).reshape(-1, 2, 3)
    bboxes = crop_bbox_in_frame(m.double().numpy(), crop_size)
    origins, size = frame_windows(bboxes, frame_size, margin=paste_margin(bboxes))
    inv = invert_affine_transform(m.to(device))
    # Window pixel (u, v) is frame pixel (u + x0, v + y0): subtract the origin from the translation.
    inv[:, :, 2] -= torch.from_numpy(origins).to(device=device, dtype=torch.float32)
    return inv, origins, size


def _generated_weight(
    mask: torch.Tensor, inv: torch.Tensor, crop_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Feathered blend weight float32 ``[N, 1, h, w]`` of the generated region ("mouth" mode)."""
    crop_w, crop_h = crop_size
    generate = 1 - torch.as_tensor(mask, dtype=torch.float32, device=inv.device).reshape(1, 1, *mask.shape[-2:])
    generate = F.interpolate(generate, size=(crop_h, crop_w), mode="bilinear", align_corners=False)
    n = inv.shape[0]
    warped = warp_affine(generate.expand(n, 1, crop_h, crop_w), inv, size, padding_mode="zeros")
    _, soft = soft_paste_mask(warped[:, 0].cpu().numpy())
    return torch.from_numpy(soft).to(inv.device).unsqueeze(1)


def generated_region(crops: FaceCrops, index: int) -> np.ndarray:
    """Blend weight of the generated region of one frame in "mouth" mode, in frame pixels.

    Every pixel where it is 0 is returned bit-exact by ``paste_back(..., mode="mouth")``.

    Args:
        crops: the frames' :class:`~latentsync.types.FaceCrops`.
        index: row of ``crops`` (a frame with a face).

    Returns:
        float32 ``[H, W]`` in 0..1 (``crops.frame_size``).
    """
    inv, origins, (h, w) = _inverse_window_matrices(
        crops.affine_matrices[index : index + 1], crops.crop_size, crops.frame_size, torch.device("cpu")
    )
    weight = np.zeros(crops.frame_size, dtype=np.float32)
    x, y = origins[0].tolist()
    weight[y : y + h, x : x + w] = _generated_weight(crops.mask, inv, crops.crop_size, (h, w))[0, 0].numpy()
    return weight


def check_paste_options(mode: str, colour_match: bool) -> None:
    """Validate the paste options.

    Raises:
        InvalidInputError: ``mode`` not in :data:`PASTE_MODES`, or ``colour_match`` with "full".
    """
    if mode not in PASTE_MODES:
        raise InvalidInputError(f"paste mode: expected one of {PASTE_MODES} ({PASTE_MODE_HELP}), got {mode!r}")
    if colour_match and mode != "mouth":
        raise InvalidInputError(
            "colour match: works with paste mode 'mouth' only (the official 'full' paste keeps its colours); "
            "choose paste mode 'mouth' or turn colour matching off"
        )


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
    mode: str = "full",
    colour_match: bool = False,
) -> np.ndarray | torch.Tensor:
    """Paste (generated) aligned faces back into their frames (spec 1.12, or only the generated region).

    Args:
        frames: uint8 ``[N, H, W, 3]`` RGB, the frames ``crops`` was computed from (numpy or torch).
        faces: ``[N, R, R, 3]`` RGB faces in aligned-crop space, uint8 0..255 or float 0..1
            (numpy or torch); entries of frames listed in ``crops.no_face_indices`` are ignored.
        crops: the :class:`~latentsync.types.FaceCrops` of these frames; ``frames[i]`` is video frame
            ``crops.start_index + i`` (``no_face_indices`` are absolute).
        device: torch device for the warps (default CPU).
        batch_size: frames per batched warp.
        mode: "full" (default: the official restore, parity) or "mouth" (only the generated region
            of ``crops.mask``; every pixel outside it bit-exact). See the module docstring.
        colour_match: match the generated region's colour to the frame along the seam ("mouth"
            mode only).

    Returns:
        uint8 ``[N, H, W, 3]``, numpy if ``frames`` is numpy, else a CPU torch tensor. Frames in
        ``crops.no_face_indices`` are returned unchanged; elsewhere only the face region ("full")
        or the feathered generated region ("mouth") changes.

    Raises:
        InvalidInputError: naming ``frames``, ``faces``, ``crops``, ``mode`` or ``colour_match``
            when a type, dtype, shape or value does not match.
    """
    check_paste_options(mode, colour_match)
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
        paste_faces(
            arr, unit_faces[idx], matrices[idx], crops.crop_size, device=device, indices=idx, out=out,
            mode=mode, mask=crops.mask, colour_match=colour_match,
        )
    return torch.from_numpy(out) if was_torch else out
