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
from latentsync.face.landmarks import Landmarker, create_landmarker
from latentsync.face.masks import load_mask
from latentsync.face.paste import paste_back
from latentsync.face.speaker import FaceChoice, choose_speaker, parse_face_choice, pick_face, speech_envelope
from latentsync.face.tracks import FaceTracker, FaceTracks, TrackRecorder
from latentsync.face.warp import as_uint8_frames, resize_crops, warp_to_crops
from latentsync.types import FaceCrops

PLACEHOLDER_VALUE = 127  # grey face for frames without a face
SMOOTHING_MODES = ("one_euro", "none")
MAX_FACES = 4  # faces detected per frame, for the tracks and the face choice


class FaceAligner:
    """Aligns the faces of one video, chunk after chunk, and pastes generated faces back.

    Per frame: mediapipe meshes of up to ``max_faces`` faces (tracking mode) -> face tracks
    (:mod:`latentsync.face.tracks`) -> the chosen track's three anchors (brow-L, brow-R, nose) ->
    temporal smoothing -> similarity transform to the official template with the official bias
    smoothing -> kornia warp (float32, bilinear, fill 127) -> uint8 truncation -> LANCZOS4 resize to
    R x R. Frames where the chosen face is absent are "no face" frames; other faces are untouched.

    Face choice (``face``, :mod:`latentsync.face.speaker`): ``largest``, ``index:N`` and
    ``point:X,Y`` choose a track when none is followed (first face, or the followed track ended
    after ``max_gap`` frames unseen) and follow it. ``auto`` needs the whole clip: call
    :meth:`choose_speaker` with the frames and the speech first; until then (and for frames it did
    not see) it behaves as ``largest``. With one face in view every choice gives the official
    single-face result (mediapipe returns the same mesh for it; a duplicate detection of the same
    face, which mediapipe emits now and then when asked for several faces, is dropped).

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
        face: face choice, a :class:`~latentsync.face.speaker.FaceChoice` or its text (above).
        max_faces: faces detected per frame (default landmarker only), >= 1.
        max_gap: frames a face may be unseen and keep its track (default 2 s of frames).

    Raises:
        InvalidInputError: unsupported ``resolution``, ``smoothing`` or ``face``, bad ``fps``.

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
        face: str | FaceChoice = "largest",
        max_faces: int = MAX_FACES,
        max_gap: int | None = None,
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
            video_mode=True, model_path=model_path, search_dirs=tuple(search_dirs), download=download, fps=self.fps,
            num_faces=int(max_faces),
        )
        self.face = parse_face_choice(face)
        self._tracker = FaceTracker(max_gap=int(max_gap) if max_gap is not None else int(round(2 * self.fps)))
        self._plan: tuple[FaceTracks, np.ndarray] | None = None
        self.last_raw_anchors = np.zeros((0, 3, 2))
        self.last_anchors = np.zeros((0, 3, 2))
        self._reset_state()

    # -- state ------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._next_index: int | None = None
        self._frame_size: tuple[int, int] | None = None
        self._tracker.reset()
        self._followed: int | None = None
        self._restart_track()

    def _restart_track(self) -> None:
        """Forget temporal history (filter + bias); the next face starts a new track."""
        self._bias: np.ndarray | None = None
        self._current = -1
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

    def _ensure_landmarker(self) -> Landmarker:
        if self._landmarker is None:
            self._landmarker = create_landmarker(**self._landmarker_args)
        return self._landmarker

    def _track(self, arr: np.ndarray, start_index: int) -> FaceTracks:
        """Detect and track the faces of consecutive frames (continues the tracker's state)."""
        landmarker = self._ensure_landmarker()
        recorder = TrackRecorder(start_index, arr.shape[1:3])
        for i in range(arr.shape[0]):
            meshes = landmarker.detect_faces(np.ascontiguousarray(arr[i]), start_index + i)
            recorder.add(self._tracker.update(start_index + i, meshes), meshes)
        return recorder.tracks()

    def _follow(self, tracks: FaceTracks) -> np.ndarray:
        """Track id per frame for the geometric choices: keep the followed track while it lives."""
        ids = np.full(len(tracks), -1, dtype=np.int64)
        present = tracks.present()
        for i in range(len(tracks)):
            frame_index = tracks.start_index + i
            if self._followed is None or self._followed not in self._tracker.alive(frame_index):
                here = np.flatnonzero(present[:, i])
                boxes = {int(t): tracks.boxes[t, i] for t in here}
                self._followed = pick_face(self.face, boxes, tracks.frame_size)
            if self._followed is not None and self._followed < tracks.num_tracks and present[self._followed, i]:
                ids[i] = self._followed
        return ids

    def scan_faces(self, chunks) -> FaceTracks:
        """Detect and track every face of a whole clip (no warps), e.g. to choose the speaker.

        Args:
            chunks: iterable of uint8 ``[n, H, W, 3]`` RGB frame chunks of one video, in order from
                frame 0.

        Returns:
            :class:`~latentsync.face.tracks.FaceTracks` of all frames (``start_index`` 0).

        Raises:
            InvalidInputError: a chunk that is not uint8 ``[n, H, W, 3]``, or frames of another size.
        """
        self.reset()
        parts: list[FaceTracks] = []
        pos = 0
        for chunk in chunks:
            arr = as_uint8_frames(chunk, "frames")
            if parts and tuple(arr.shape[1:3]) != parts[0].frame_size:
                raise InvalidInputError(
                    f"frames: expected every chunk at frame size {parts[0].frame_size}, got {tuple(arr.shape[1:3])}"
                )
            parts.append(self._track(arr, pos))
            pos += arr.shape[0]
        self.reset()
        return FaceTracks.concat(parts)

    def choose_speaker(self, chunks, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """Choose the active speaker over a whole clip and follow that choice in :meth:`align`.

        Scans the clip (:meth:`scan_faces`), scores each track's mouth opening against the speech
        envelope (:func:`~latentsync.face.speaker.choose_speaker`) and stores the per-frame choice;
        later :meth:`align` calls read the chosen faces' anchors from the scan instead of detecting
        again (frames past the scanned clip are detected as for ``largest``).

        Args:
            chunks: iterable of uint8 ``[n, H, W, 3]`` frame chunks, the whole clip from frame 0.
            waveform: float ``[S]`` mono speech, -1..1, aligned with frame 0.
            sample_rate: Hz.

        Returns:
            int64 ``[N]`` the chosen track per frame (-1: no face).
        """
        tracks = self.scan_faces(chunks)
        env = speech_envelope(waveform, sample_rate, self.fps, len(tracks))
        ids = choose_speaker(tracks, env, self.fps)
        self._plan = (tracks, ids)
        return ids

    def _chosen(self, arr: np.ndarray, start_index: int) -> tuple[FaceTracks, np.ndarray]:
        """The frames' tracks and the chosen track id per frame (-1: no face)."""
        if self._plan is not None:
            tracks, ids = self._plan
            lo, hi = start_index - tracks.start_index, start_index - tracks.start_index + arr.shape[0]
            if lo >= 0 and hi <= len(tracks):
                return tracks.rows(lo, hi), ids[lo:hi]
        tracks = self._track(arr, start_index)
        return tracks, self._follow(tracks)

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
        if self._next_index is not None and (start_index != self._next_index or self._frame_size != (height, width)):
            self.reset()
        self._frame_size = (height, width)
        self._next_index = start_index + n

        matrices = np.zeros((n, 2, 3), dtype=np.float32)
        raw_all = np.full((n, 3, 2), np.nan)
        used_all = np.full((n, 3, 2), np.nan)
        no_face: list[int] = []
        tracks, ids = self._chosen(arr, start_index)
        for i, t in enumerate(ids.tolist()):
            if t < 0 or t != self._current:
                self._restart_track()
            self._current = t
            if t < 0:
                no_face.append(start_index + i)
                continue
            if self._smoother is None:
                raw = used = tracks.anchors_rounded[t, i]
            else:
                raw = tracks.anchors[t, i]
                used = self._smoother(raw)
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
        self,
        frames: np.ndarray | torch.Tensor,
        faces: np.ndarray | torch.Tensor,
        crops: FaceCrops,
        mode: str = "full",
        colour_match: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """:func:`latentsync.face.paste.paste_back` on this aligner's device (``mode``, ``colour_match`` as there)."""
        return paste_back(frames, faces, crops, device=self.device, mode=mode, colour_match=colour_match)

