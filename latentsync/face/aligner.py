"""Face aligner for a whole video, called chunk by chunk (spec 1.7, 1.8, 1.12).

Differences from the official alignment, on purpose (spec 7, item 5): a frame without a face is
passed through (listed in ``FaceCrops.no_face_indices``) instead of aborting the job; the face is
tracked from frame to frame (mediapipe video mode) instead of detected per frame; the anchor points
are smoothed over time (One-Euro filter) on top of the official sub-pixel "bias" smoothing; warps
run in float32 (the official default is float16) and on any device.
"""

from __future__ import annotations

import numpy as np
import torch

from latentsync.errors import InvalidInputError
from latentsync.face.alignment import (
    OneEuroSmoother,
    check_resolution,
    crop_size,
    face_template,
    similarity_transform,
)
from latentsync.face.landmarks import Landmarker, anchor_points, create_landmarker
from latentsync.face.masks import load_mask
from latentsync.face.paste import paste_back
from latentsync.face.warp import as_uint8_frames, resize_crops, warp_to_crops
from latentsync.types import FaceCrops

PLACEHOLDER_VALUE = 127  # grey face for frames without a face
SMOOTHING_MODES = ("one_euro", "none")


class FaceAligner:
    """Aligns the faces of one video, chunk after chunk, and pastes generated faces back.

    Per frame: mediapipe mesh (tracking mode) -> three anchors (brow-L, brow-R, nose) -> temporal
    smoothing -> similarity transform to the official template with the official bias smoothing ->
    kornia warp (float32, bilinear, fill 127) -> uint8 truncation -> LANCZOS4 resize to R x R.

    Temporal smoothing (``smoothing``):

    * ``"one_euro"`` (default): the sub-pixel anchors (means of the mesh points, no integer
      rounding) go through a :class:`~latentsync.face.alignment.OneEuroSmoother` (min_cutoff 1 Hz,
      beta 20 Hz per face width per second, at ``fps``) before the transform. Still faces lose their
      landmark jitter, moving faces are followed with little lag. The filter restarts after any
      frame without a face, at a non-contiguous ``start_index`` and on a jump of more than half a
      face width in one frame (cut).
    * ``"none"``: the official computation exactly: integer-rounded InsightFace-style landmarks,
      rounded anchors, only the official bias smoothing. Use for parity checks.
    * a ``OneEuroSmoother`` instance: One-Euro with custom settings.

    The official bias smoothing (spec 1.7) is applied in every mode and restarts with the filter.

    Args:
        resolution: 256 or 512, side of the aligned faces.
        landmarker: a :class:`~latentsync.face.landmarks.Landmarker`; default: created on first use
            by :func:`~latentsync.face.landmarks.create_landmarker` in video (tracking) mode (bundled
            mediapipe FaceMesh, else Tasks with ``face_landmarker.task``).
        smoothing: see above.
        mask_name: inpainting mask (``mask.png`` .. ``mask4.png`` or a PNG path).
        device: torch device for the warps (default CPU); outputs are CPU tensors.
        fps: frame rate of the video (Hz) for the smoothing filter and Tasks timestamps.
        model_path, search_dirs, download: Tasks backend only: an explicit ``face_landmarker.task``
            (file or folder), ComfyUI's ``latentsync`` folders searched before the env var and the
            user cache, and whether a missing file may be downloaded (see
            :func:`~latentsync.face.landmarker_model.resolve_face_landmarker_task`).

    Raises:
        InvalidInputError: unsupported ``resolution`` or ``smoothing``, bad ``fps``.

    Attributes:
        last_raw_anchors, last_anchors: float64 ``[N, 3, 2]`` anchors of the last :meth:`align` call
            before / after temporal smoothing (NaN for frames without a face); diagnostics.
    """

    def __init__(
        self,
        resolution: int = 256,
        landmarker: Landmarker | None = None,
        smoothing: str | OneEuroSmoother = "one_euro",
        *,
        mask_name: str = "mask.png",
        device: torch.device | str | None = None,
        fps: float = 25.0,
        model_path: str | None = None,
        search_dirs: tuple[str, ...] | list[str] = (),
        download: bool = True,
    ) -> None:
        self.resolution = check_resolution(resolution)
        if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and np.isfinite(fps) and fps > 0):
            raise InvalidInputError(f"fps: expected a positive frame rate in Hz, got {fps!r}")
        if isinstance(smoothing, OneEuroSmoother):
            self._smoother: OneEuroSmoother | None = smoothing
        elif smoothing == "one_euro":
            self._smoother = OneEuroSmoother(fps=float(fps))
        elif smoothing == "none":
            self._smoother = None
        else:
            raise InvalidInputError(
                f"smoothing: expected one of {SMOOTHING_MODES} or a OneEuroSmoother, got {smoothing!r}"
            )
        if landmarker is not None and not isinstance(landmarker, Landmarker):
            raise InvalidInputError(
                f"landmarker: expected an object with detect(frame, frame_index), reset() and close(), "
                f"got {type(landmarker).__name__}"
            )
        self.smoothing = "custom" if isinstance(smoothing, OneEuroSmoother) else smoothing
        self.crop_size = crop_size(self.resolution)
        self.template = face_template(self.resolution)
        self.mask = load_mask(self.resolution, mask_name)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.fps = float(fps)
        self._landmarker = landmarker
        self._owns_landmarker = landmarker is None
        self._landmarker_args = dict(
            video_mode=True, model_path=model_path, search_dirs=tuple(search_dirs), download=download, fps=self.fps
        )
        self.last_raw_anchors = np.zeros((0, 3, 2))
        self.last_anchors = np.zeros((0, 3, 2))
        self._reset_state()

    # -- state ------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._next_index: int | None = None
        self._frame_size: tuple[int, int] | None = None
        self._restart_track()

    def _restart_track(self) -> None:
        """Forget temporal history (filter + bias); the next face starts a new track."""
        self._bias: np.ndarray | None = None
        if self._smoother is not None:
            self._smoother.reset()

    def reset(self) -> None:
        """Forget all tracking and smoothing state (e.g. before aligning another video)."""
        self._reset_state()
        if self._landmarker is not None:
            self._landmarker.reset()

    def close(self) -> None:
        """Free the landmarker if this aligner created it."""
        if self._landmarker is not None and self._owns_landmarker:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> FaceAligner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- align ------------------------------------------------------------------------------------

    def _anchors(self, mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._smoother is None:
            raw = anchor_points(mesh, rounded=True)
            return raw, raw
        raw = anchor_points(mesh, rounded=False)
        return raw, self._smoother(raw)

    def align(self, frames: np.ndarray | torch.Tensor, start_index: int = 0) -> FaceCrops:
        """Align the faces of consecutive frames.

        Stateful: call it with the chunks of one video in order (``start_index`` = absolute index of
        ``frames[0]``); tracking and smoothing continue across calls. A ``start_index`` that does not
        continue the previous call, or a different frame size, restarts tracking and smoothing.

        Args:
            frames: uint8 ``[N, H, W, 3]`` RGB frames, numpy or torch.
            start_index: absolute index of ``frames[0]`` in the video (>= 0).

        Returns:
            :class:`~latentsync.types.FaceCrops` with ``faces`` uint8 ``[N, R, R, 3]`` (grey 127 where
            no face), ``affine_matrices`` float32 ``[N, 2, 3]`` frame -> crop pixels (zeros where no
            face), ``no_face_indices`` absolute indices, ``start_index`` as given.

        Raises:
            InvalidInputError: ``frames`` is not uint8 ``[N, H, W, 3]``, or ``start_index`` < 0.
            MissingWeightsError: no mediapipe model is available (default landmarker only).
        """
        arr = as_uint8_frames(frames, "frames")
        if isinstance(start_index, bool) or not isinstance(start_index, (int, np.integer)) or start_index < 0:
            raise InvalidInputError(f"start_index: expected an integer >= 0, got {start_index!r}")
        start_index = int(start_index)
        n, height, width = arr.shape[:3]
        if self._landmarker is None:
            self._landmarker = create_landmarker(**self._landmarker_args)
        if self._next_index is not None and (start_index != self._next_index or self._frame_size != (height, width)):
            self.reset()
        self._frame_size = (height, width)
        self._next_index = start_index + n

        matrices = np.zeros((n, 2, 3), dtype=np.float32)
        raw_all = np.full((n, 3, 2), np.nan)
        used_all = np.full((n, 3, 2), np.nan)
        no_face: list[int] = []
        for i in range(n):
            mesh = self._landmarker.detect(np.ascontiguousarray(arr[i]), start_index + i)
            if mesh is None:
                no_face.append(start_index + i)
                self._restart_track()
                continue
            raw, used = self._anchors(mesh)
            matrix, self._bias = similarity_transform(used, self.template, self._bias)
            matrices[i] = matrix
            raw_all[i], used_all[i] = raw, used
        self.last_raw_anchors, self.last_anchors = raw_all, used_all

        w, h = self.crop_size
        faces = torch.full((n, self.resolution, self.resolution, 3), PLACEHOLDER_VALUE, dtype=torch.uint8)
        missing = set(no_face)
        has_face = [i for i in range(n) if start_index + i not in missing]
        if has_face:
            crops = warp_to_crops(arr, matrices[has_face], (w, h), device=self.device, indices=has_face)
            faces[has_face] = resize_crops(crops, self.resolution)
        return FaceCrops(
            faces=faces,
            affine_matrices=torch.from_numpy(matrices),
            crop_size=(w, h),
            mask=self.mask.clone(),
            frame_size=(height, width),
            resolution=self.resolution,
            no_face_indices=no_face,
            start_index=start_index,
        )

    def paste_back(
        self, frames: np.ndarray | torch.Tensor, faces: np.ndarray | torch.Tensor, crops: FaceCrops
    ) -> np.ndarray | torch.Tensor:
        """:func:`latentsync.face.paste.paste_back` on this aligner's device."""
        return paste_back(frames, faces, crops, device=self.device)

