"""Face landmarks with mediapipe, and the three alignment anchors derived from them (spec 1.7).

Two backends, chosen by :func:`create_landmarker`:

* the legacy FaceMesh solution (``mediapipe.solutions.face_mesh``, mediapipe <= 0.10.21): its model
  is bundled in the wheel, so it runs offline;
* the Tasks ``FaceLandmarker`` (every mediapipe version; the only one in >= 0.10.30): it needs a
  ``face_landmarker.task`` file, looked up in a models folder and downloaded there when allowed.

Both run in tracking ("video") mode by default: the face found in one frame seeds the next, which
is faster and far more robust than per-frame detection (on demo1, 1080 x 1920, per-frame detection
missed 35 of 250 frames, tracking none). One landmarker serves one video, frames in order.

The official code uses InsightFace's 106-point landmarks (integers). The mapping from mediapipe's
468-point mesh used here (and for the parity reference data) is: 106-point rows 43, 48, 49, 51, 50
(image-left brow) = midpoints of mesh pairs 70/46, 63/53, 105/52, 66/65, 107/55; rows 101-105
(image-right brow) = midpoints of 300/276, 293/283, 334/282, 296/295, 336/285; rows 74, 77, 83, 86
(nose) = mesh points 195, 5, 4, 1; all rounded to integers like InsightFace's.

The Tasks model is another network than the legacy mesh (so is the legacy ``refine_landmarks``
one): on the demo clips in tracking mode its anchors differ from the legacy ones by 2.8-4.7 px
(mean worst coordinate per frame; bench/bench_tasks_alignment.py). Three parts of that are
systematic and corrected here (:func:`to_legacy_anchor_convention`, applied by the Tasks backend):

* a fixed offset per anchor in the face frame (:data:`TASKS_ANCHOR_MODEL`): the Tasks brows sit
  ~1 % of the brow distance further apart and the nose and brows a little lower;
* a part that depends on the head pose: linear in the face-frame positions of the nose tip, the
  chin and the face outline at both cheeks (:class:`TasksAnchorModel`, 48 ridge coefficients);
* a lag: in VIDEO mode a single-face Tasks landmarker One-Euro-smooths its landmarks (mediapipe's
  FaceLandmarkerGraph turns ``smooth_landmarks`` on for ``num_faces == 1`` in stream mode: min
  cutoff 0.05 Hz, beta 80, derivative cutoff 1 Hz, speeds in face-box sizes per second), the
  legacy mesh does not. Fed one frame repeatedly, the Tasks points creep to their value over ~5-10
  frames (mediapipe 0.10.21 and 1.2.3 alike), the legacy ones settle in 1-2; the
  legacy-minus-Tasks difference follows the Tasks anchors' last step with a gain that falls with
  speed (0.8 frame below 1 px per frame, 0.06 above 8 px). :class:`TasksSmoothingLead` undoes one
  filter step per anchor with mediapipe's own beta and derivative filter; only its minimum cutoff
  is fitted (4 Hz instead of 0.05: the exact inverse would multiply a still face's jitter by up to
  80). The landmarker applies it to the face of its smoothed (single-face) stream.

Fitted on demo1 + demo2, original and mirrored; demo3 held out: 3.03 -> 1.92 px (mirrored 3.31
-> 2.14; 1.79 / 2.03 after the aligner's One-Euro smoothing of both); offsets alone gave 2.59 /
2.83, offsets and lead 2.18 / 2.43. Leave-one-clip-out, mean over the six runs: 2.85 px (offsets
alone 3.37, with the lead 3.03). Refitting beta (20-320) picks mediapipe's 80. The rest drifts
slowly and differs per clip and between a clip and its mirror image: the legacy mesh disagrees
with its own mirrored run by 2.1-2.9 px, and even the mirror-averaged corrected Tasks anchors are
2.0-2.9 px from the mirror-averaged legacy ones, so what is left is the two networks' different
reading of each face, not a mapping error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

from latentsync.errors import InvalidInputError, MissingWeightsError
from latentsync.face.landmarker_model import FACE_LANDMARKER_URL, resolve_face_landmarker_task

NUM_MESH_POINTS = 468

BROW_LEFT_ROWS = (43, 48, 49, 51, 50)
BROW_LEFT_PAIRS = ((70, 46), (63, 53), (105, 52), (66, 65), (107, 55))
BROW_RIGHT_ROWS = (101, 102, 103, 104, 105)
BROW_RIGHT_PAIRS = ((300, 276), (293, 283), (334, 282), (296, 295), (336, 285))
NOSE_ROWS = (74, 77, 83, 86)
NOSE_POINTS = (195, 5, 4, 1)

#: Tasks mesh points whose face-frame positions stand for the head pose: nose tip, chin, face
#: outline at the image-left and image-right cheek. Their (x, y) in face units, in this order, are
#: the 8 pose features of :func:`pose_features`.
TASKS_POSE_POINTS = (1, 152, 234, 454)


@dataclass(frozen=True)
class TasksAnchorModel:
    """Legacy-minus-Tasks anchor offsets (brow-L, brow-R, nose) for a face's head pose.

    Offsets are in the face frame of the Tasks anchors (:func:`face_frame`): x along brow-L ->
    brow-R, y perpendicular towards the nose (a mirrored face gets the mirrored frame), both in
    units of the brow distance: ``offsets + pose_gains @ clip(pose_features - pose_mean, +-clip x
    pose_spread)`` (the clip keeps poses beyond the fit data from being extrapolated).

    Attributes:
        offsets: float64 ``[3, 2]`` offsets at the mean pose.
        pose_mean, pose_spread: float64 ``[8]`` mean and standard deviation of the pose features
            over the fit frames (face units).
        pose_gains: float64 ``[6, 8]`` change of the offsets (rows brow-L x, y, brow-R x, y, nose x,
            y) per face unit of each pose feature (ridge regression).
        clip: most standard deviations a pose feature may be from its mean.
    """

    offsets: np.ndarray
    pose_mean: np.ndarray
    pose_spread: np.ndarray
    pose_gains: np.ndarray
    clip: float = 2.0

    def face_offsets(self, xy: np.ndarray) -> np.ndarray:
        """Offsets for the face of ``xy`` (``[K >= 468, 2]`` Tasks points, pixels), ``[3, 2]`` face units."""
        limit = self.clip * self.pose_spread
        deviation = np.clip(pose_features(xy) - self.pose_mean, -limit, limit)
        return self.offsets + (self.pose_gains @ deviation).reshape(3, 2)


#: The fitted model (bench/bench_tasks_alignment.py, with :class:`TasksSmoothingLead`; demo1 + demo2).
TASKS_ANCHOR_MODEL = TasksAnchorModel(
    offsets=np.array([[0.0075, -0.0055], [-0.0056, -0.0076], [-0.0034, -0.0113]]),
    pose_mean=np.array([0.0010, 0.4799, -0.0001, 1.6239, -0.9425, 0.4235, 0.9406, 0.4254]),
    pose_spread=np.array([0.0575, 0.0379, 0.0641, 0.0696, 0.1309, 0.0976, 0.1299, 0.0958]),
    pose_gains=np.array(
        [
            [0.117, -0.186, -0.042, 0.020, 0.090, -0.039, -0.042, -0.043],
            [-0.014, 0.118, 0.063, 0.030, 0.089, 0.083, -0.041, -0.009],
            [0.176, 0.175, -0.060, 0.005, 0.007, 0.046, 0.084, 0.045],
            [-0.073, 0.055, -0.038, 0.085, 0.054, -0.049, -0.103, 0.078],
            [-0.124, -0.004, 0.135, -0.040, -0.093, 0.005, 0.027, -0.002],
            [-0.026, 0.010, 0.062, 0.095, 0.038, 0.005, -0.074, 0.018],
        ]
    ),
)

#: mediapipe's VIDEO-mode face landmark smoothing (One-Euro): beta (Hz per face-box size per
#: second of speed) and the cutoff (Hz) of its speed estimate.
TASKS_SMOOTHING_BETA = 80.0
TASKS_SMOOTHING_DERIVATIVE_CUTOFF = 1.0
#: Minimum cutoff (Hz) of the lead that undoes that smoothing (fitted; mediapipe's is 0.05).
TASKS_LEAD_MIN_CUTOFF = 4.0


@runtime_checkable
class Landmarker(Protocol):
    """What :class:`~latentsync.face.aligner.FaceAligner` needs from a landmark detector.

    ``detect_faces(frame, frame_index)`` takes one uint8 ``[H, W, 3]`` RGB frame and its absolute
    index in the video (increasing between calls, for tracking) and returns a list of float64
    ``[K >= 468, 2]`` mesh points in frame pixels (x, y), one per face found (at most the
    landmarker's ``num_faces``; empty when there is none). ``detect`` is the first of them or None.
    ``reset()`` forgets the tracked faces (next frame is detected from scratch); ``close()`` frees
    native resources.
    """

    def detect_faces(self, frame: np.ndarray, frame_index: int) -> list[np.ndarray]: ...

    def detect(self, frame: np.ndarray, frame_index: int) -> np.ndarray | None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        found = f"{frame.dtype} {list(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InvalidInputError(f"frame: expected a uint8 numpy array [H, W, 3] (RGB), got {found}")
    return np.ascontiguousarray(frame)


class MediaPipeFaceMesh:
    """Legacy mediapipe FaceMesh (bundled model, mediapipe <= 0.10.21).

    Args:
        static_image_mode: False (default) tracks the face from frame to frame; True detects in
            every frame independently (as the parity reference was made).
        min_detection_confidence, min_tracking_confidence: mediapipe thresholds in [0, 1].
        num_faces: most faces returned per frame (mediapipe ``max_num_faces``).

    Raises:
        MissingWeightsError: this mediapipe has no ``solutions.face_mesh``.
    """

    def __init__(
        self,
        static_image_mode: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        num_faces: int = 1,
    ) -> None:
        face_mesh = _legacy_face_mesh_module()
        if face_mesh is None:
            raise MissingWeightsError(
                "mediapipe: this version has no bundled face mesh (mediapipe.solutions.face_mesh); "
                "install mediapipe==0.10.21 or use the Tasks landmarker with a face_landmarker.task file"
            )
        self._module = face_mesh
        self._kwargs = dict(
            static_image_mode=bool(static_image_mode),
            max_num_faces=int(num_faces),
            refine_landmarks=False,
            min_detection_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )
        self._mesh = face_mesh.FaceMesh(**self._kwargs)

    def detect_faces(self, frame: np.ndarray, frame_index: int) -> list[np.ndarray]:
        """Mesh points float64 ``[468, 2]`` in pixels of each face (see :class:`Landmarker`)."""
        frame = _check_frame(frame)
        result = self._mesh.process(frame)
        height, width = frame.shape[:2]
        return [_to_pixels(face.landmark, width, height) for face in result.multi_face_landmarks or []]

    def detect(self, frame: np.ndarray, frame_index: int) -> np.ndarray | None:
        """The first face of :meth:`detect_faces`, or None."""
        return next(iter(self.detect_faces(frame, frame_index)), None)

    def reset(self) -> None:
        self._mesh.close()
        self._mesh = self._module.FaceMesh(**self._kwargs)

    def close(self) -> None:
        self._mesh.close()


class MediaPipeTasksLandmarker:
    """mediapipe Tasks ``FaceLandmarker`` (any mediapipe with ``mediapipe.tasks``).

    Args:
        model_path: path of ``face_landmarker.task``.
        video_mode: True (default) uses the VIDEO running mode (tracking; frame timestamps are
            derived from the frame index and ``fps``); False uses IMAGE mode (per-frame detection).
        legacy_anchors: True (default) moves the anchor-feeding mesh points to the legacy mesh's
            convention (:func:`to_legacy_anchor_convention`: offsets, and the smoothing lead for the
            face of mediapipe's smoothed single-face VIDEO-mode stream); False returns raw points.
        fps: nominal frame rate used only to make VIDEO-mode timestamps (ms).
        min_detection_confidence, min_tracking_confidence: mediapipe thresholds in [0, 1].
        num_faces: most faces returned per frame (mediapipe ``num_faces``). In VIDEO mode with
            ``num_faces > 1`` a second, single-face landmarker runs beside the multi-face one and its
            face comes first: mediapipe's multi-face tracking drops a tracked face in frames where its
            detector misses (demo3 frames 20-23), the single-face tracker keeps it. The duplicate of
            that face among the multi-face results is dropped by the face tracks (IoU > 0.3).

    Raises:
        MissingWeightsError: the file does not exist.
    """

    def __init__(
        self,
        model_path: str | Path,
        video_mode: bool = True,
        fps: float = 25.0,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        legacy_anchors: bool = True,
        num_faces: int = 1,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise MissingWeightsError(
                f"face landmarker: {path} not found; download {FACE_LANDMARKER_URL} and save it as {path}"
            )
        import mediapipe as mp

        vision = mp.tasks.vision
        mode = vision.RunningMode.VIDEO if video_mode else vision.RunningMode.IMAGE
        self._options = vision.FaceLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(model_asset_path=str(path)),
            running_mode=mode,
            num_faces=int(num_faces),
            min_face_detection_confidence=float(min_detection_confidence),
            min_face_presence_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )
        self._mp = mp
        self._legacy_anchors = bool(legacy_anchors)
        self._video_mode = bool(video_mode)
        self._ms_per_frame = 1000.0 / float(fps)
        self._last_ts = -1
        self._lead = TasksSmoothingLead()
        self._lead_index = -2  # frame index of the smoothed stream's last face
        self._single_options = None
        if video_mode and int(num_faces) > 1:
            self._single_options = vision.FaceLandmarkerOptions(
                base_options=self._options.base_options, running_mode=mode, num_faces=1,
                min_face_detection_confidence=float(min_detection_confidence),
                min_face_presence_confidence=float(min_detection_confidence),
                min_tracking_confidence=float(min_tracking_confidence),
            )
        self._create()

    def _create(self) -> None:
        create = self._mp.tasks.vision.FaceLandmarker.create_from_options
        self._landmarker = create(self._options)
        self._single = create(self._single_options) if self._single_options is not None else None

    def detect_faces(self, frame: np.ndarray, frame_index: int) -> list[np.ndarray]:
        """Mesh points float64 ``[478, 2]`` in pixels of each face (legacy anchor convention unless
        ``legacy_anchors=False``; see :class:`Landmarker`).

        In VIDEO mode the first face comes from a single-face landmarker, which mediapipe smooths;
        with the legacy convention it also gets the :class:`TasksSmoothingLead` of that stream
        (restarted when the stream had no face in the frame before, ``frame_index - 1``)."""
        frame = _check_frame(frame)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=frame)
        smoothed = False
        if self._video_mode:
            ts = max(int(round(frame_index * self._ms_per_frame)), self._last_ts + 1)
            self._last_ts = ts
            tracker = self._single if self._single is not None else self._landmarker
            found = tracker.detect_for_video(image, ts).face_landmarks or []
            smoothed = bool(found)
            if self._single is not None:
                found += self._landmarker.detect_for_video(image, ts).face_landmarks or []
        else:
            found = self._landmarker.detect(image).face_landmarks or []
        height, width = frame.shape[:2]
        faces = [_to_pixels(face, width, height) for face in found]
        if not self._legacy_anchors:
            return faces
        if not smoothed:
            return [to_legacy_anchor_convention(xy) for xy in faces]
        if frame_index != self._lead_index + 1:
            self._lead.reset()
        self._lead_index = frame_index
        lead = self._lead(faces[0], self._last_ts)
        return [to_legacy_anchor_convention(xy, lead if i == 0 else None) for i, xy in enumerate(faces)]

    def detect(self, frame: np.ndarray, frame_index: int) -> np.ndarray | None:
        """The first face of :meth:`detect_faces`, or None."""
        return next(iter(self.detect_faces(frame, frame_index)), None)

    def reset(self) -> None:
        self.close()
        self._last_ts = -1
        self._lead_index = -2
        self._create()

    def close(self) -> None:
        self._landmarker.close()
        if self._single is not None:
            self._single.close()


def face_frame(anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Face frame of three anchors (brow-L, brow-R, nose), float64 ``[3, 2]`` pixels.

    Returns:
        ``(origin [2], axes [2, 2], scale)``: origin = mean of the anchors; ``axes[0]`` = unit vector
        brow-L -> brow-R, ``axes[1]`` = its perpendicular on the nose's side (so a mirrored face gets
        the mirrored frame); scale = brow distance in pixels. Face coordinates of a point ``p`` are
        ``axes @ (p - origin) / scale``.
    """
    origin = anchors.mean(axis=0)
    across = anchors[1] - anchors[0]
    scale = float(np.linalg.norm(across))
    ex = across / scale
    ey = np.array([-ex[1], ex[0]])
    if ey @ (anchors[2] - origin) < 0:
        ey = -ey
    return origin, np.stack([ex, ey]), scale


class TasksSmoothingLead:
    """Undoes the lag of mediapipe's VIDEO-mode landmark smoothing on one face's three anchors.

    mediapipe filters each coordinate ``x`` as ``y_t = y_(t-1) + alpha_t (x_t - y_(t-1))`` with
    ``alpha = 1 / (1 + f / (2 pi cutoff))``, ``cutoff = min_cutoff + beta |dx|`` and ``dx`` the
    coordinate's speed (face-box sizes per second) low-passed at ``d_cutoff``; so the unsmoothed
    value is ``x_t = y_t + (1 - alpha_t) / alpha_t (y_t - y_(t-1))``. This takes the smoothed
    anchors for ``x`` in the speed estimate and returns that lead, ``f / (2 pi cutoff)`` frames
    times the anchor's last step. Feed the frames of one face track in order; :meth:`reset` after
    a frame without the face.

    Args:
        min_cutoff: Hz (default :data:`TASKS_LEAD_MIN_CUTOFF`, fitted; caps the lead at
            ``f / (2 pi min_cutoff)`` frames, ~1 at 25 fps).
        beta, d_cutoff: mediapipe's settings (:data:`TASKS_SMOOTHING_BETA`,
            :data:`TASKS_SMOOTHING_DERIVATIVE_CUTOFF`).
    """

    def __init__(
        self,
        min_cutoff: float = TASKS_LEAD_MIN_CUTOFF,
        beta: float = TASKS_SMOOTHING_BETA,
        d_cutoff: float = TASKS_SMOOTHING_DERIVATIVE_CUTOFF,
    ) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the face (the next frame gets no lead)."""
        self._last: tuple[float, np.ndarray] | None = None  # (timestamp ms, anchors [3, 2] px)
        self._speed = np.zeros((3, 2))  # low-passed speed, face-box sizes per second

    def __call__(self, xy: np.ndarray, timestamp_ms: float) -> np.ndarray:
        """Lead of this frame's anchors, float64 ``[3, 2]`` pixels (zeros for a track's first frame).

        Args:
            xy: ``[K >= 468, 2]`` smoothed Tasks mesh points in frame pixels.
            timestamp_ms: the frame's VIDEO-mode timestamp, increasing.
        """
        xy = _check_mesh(xy)
        anchors = anchor_points(xy, rounded=False)
        last, self._last = self._last, (float(timestamp_ms), anchors)
        if last is None or timestamp_ms <= last[0]:
            self._speed = np.zeros((3, 2))
            return np.zeros((3, 2))
        rate = 1000.0 / (timestamp_ms - last[0])  # Hz
        step = anchors - last[1]
        box = float(np.ptp(xy[:, 0]) + np.ptp(xy[:, 1])) / 2  # mediapipe's object scale, px
        self._speed += (step * rate / box - self._speed) / (1.0 + rate / (2 * np.pi * self.d_cutoff))
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed)
        return rate / (2 * np.pi * cutoff) * step


def pose_features(xy: np.ndarray) -> np.ndarray:
    """Face-frame (x, y) of the :data:`TASKS_POSE_POINTS`, float64 ``[8]`` face units.

    Args:
        xy: ``[K >= 468, 2]`` Tasks mesh points in frame pixels (the frame is that of their anchors).
    """
    xy = _check_mesh(xy)
    origin, axes, scale = face_frame(anchor_points(xy, rounded=False))
    return ((xy[list(TASKS_POSE_POINTS)] - origin) @ axes.T / scale).ravel()


def to_legacy_anchor_convention(
    xy: np.ndarray, lead: np.ndarray | None = None, *, model: TasksAnchorModel = TASKS_ANCHOR_MODEL
) -> np.ndarray:
    """Tasks mesh points with the anchor-feeding points moved to the legacy mesh's convention.

    Each anchor's shift - its offset for this face's pose (:meth:`TasksAnchorModel.face_offsets`,
    face units in the frame of the Tasks anchors) turned into pixels, plus its ``lead`` - is added
    to every mesh point that feeds that anchor (brow pairs, nose points), so the sub-pixel anchors
    move by exactly that shift; all other points are unchanged.

    Args:
        xy: float64 ``[K >= 468, 2]`` Tasks mesh points in frame pixels.
        lead: float64 ``[3, 2]`` pixels from :class:`TasksSmoothingLead` for a face of mediapipe's
            smoothed stream, or None.
        model: the offsets' model (default the fitted :data:`TASKS_ANCHOR_MODEL`).

    Returns:
        float64 ``[K, 2]``, a new array.
    """
    xy = _check_mesh(xy).copy()
    _, axes, scale = face_frame(anchor_points(xy, rounded=False))
    shifts = model.face_offsets(xy) @ axes * scale  # [3, 2] pixels
    if lead is not None:
        shifts += lead
    groups = (
        sorted({p for pair in BROW_LEFT_PAIRS for p in pair}),
        sorted({p for pair in BROW_RIGHT_PAIRS for p in pair}),
        list(NOSE_POINTS),
    )
    for points, shift in zip(groups, shifts):
        xy[points] += shift
    return xy


def _to_pixels(landmarks: object, width: int, height: int) -> np.ndarray:
    """mediapipe normalised landmarks -> float64 ``[K, 2]`` pixels ``(x * W, y * H)``."""
    xy = np.array([(p.x, p.y) for p in landmarks], dtype=np.float64)
    return xy * np.array([width, height], dtype=np.float64)


def _legacy_face_mesh_module() -> object | None:
    try:
        import mediapipe as mp

        return mp.solutions.face_mesh
    except (ImportError, AttributeError):
        return None


def has_legacy_face_mesh() -> bool:
    """True when the installed mediapipe bundles the legacy FaceMesh (<= 0.10.21)."""
    return _legacy_face_mesh_module() is not None


def create_landmarker(
    video_mode: bool = True,
    model_path: str | Path | None = None,
    search_dirs: Iterable[str | Path] = (),
    download: bool = True,
    fps: float = 25.0,
    backend: str = "auto",
    num_faces: int = 1,
) -> Landmarker:
    """The default mediapipe landmarker for one video.

    Args:
        video_mode: True = tracking (legacy ``static_image_mode=False`` / Tasks VIDEO mode).
        model_path, search_dirs, download: where the Tasks backend finds ``face_landmarker.task``
            (an explicit file or folder; ComfyUI's ``latentsync`` folders) and whether it may be
            downloaded; see :func:`~latentsync.face.landmarker_model.resolve_face_landmarker_task`.
        fps: nominal frame rate for Tasks VIDEO-mode timestamps.
        backend: "auto" (legacy FaceMesh if bundled, else Tasks), "legacy" or "tasks".
        num_faces: most faces returned per frame (>= 1).

    Raises:
        InvalidInputError: unknown ``backend``.
        MissingWeightsError: the chosen backend has no model available.
    """
    if backend not in ("auto", "legacy", "tasks"):
        raise InvalidInputError(f"backend: expected 'auto', 'legacy' or 'tasks', got {backend!r}")
    if backend == "legacy" or (backend == "auto" and has_legacy_face_mesh()):
        return MediaPipeFaceMesh(static_image_mode=not video_mode, num_faces=num_faces)
    path = resolve_face_landmarker_task(model_path, search_dirs, download=download)
    return MediaPipeTasksLandmarker(path, video_mode=video_mode, fps=fps, num_faces=num_faces)


def _check_mesh(xy: np.ndarray) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < NUM_MESH_POINTS or arr.shape[1] < 2:
        raise InvalidInputError(f"landmarks: expected mediapipe mesh points [>= 468, 2], got shape {list(arr.shape)}")
    return arr[:, :2]


def mesh_to_106(xy: np.ndarray) -> np.ndarray:
    """Stand-in for InsightFace's 106-point landmarks from mediapipe mesh points.

    Args:
        xy: ``[K >= 468, 2]`` mesh points in frame pixels.

    Returns:
        int64 ``[106, 2]``: the 14 rows the alignment reads (module docstring), rounded half to even
        like ``np.round``; every other row is -1.
    """
    xy = _check_mesh(xy)
    out = np.full((106, 2), -1, dtype=np.int64)
    for rows, pairs in ((BROW_LEFT_ROWS, BROW_LEFT_PAIRS), (BROW_RIGHT_ROWS, BROW_RIGHT_PAIRS)):
        for row, (a, b) in zip(rows, pairs):
            out[row] = np.round((xy[a] + xy[b]) / 2)
    for row, p in zip(NOSE_ROWS, NOSE_POINTS):
        out[row] = np.round(xy[p])
    return out


def anchors_from_106(landmarks_106: np.ndarray) -> np.ndarray:
    """The official three anchors from 106-point landmarks, rounded (spec 1.7).

    Returns:
        float64 ``[3, 2]``: round(mean of rows 43, 48, 49, 51, 50), round(mean of rows 101-105),
        round(mean of rows 74, 77, 83, 86).
    """
    lm = np.asarray(landmarks_106, dtype=np.float64)
    if lm.shape != (106, 2):
        raise InvalidInputError(f"landmarks_106: expected shape [106, 2], got {list(lm.shape)}")
    return np.round(
        np.stack([lm[list(BROW_LEFT_ROWS)].mean(0), lm[list(BROW_RIGHT_ROWS)].mean(0), lm[list(NOSE_ROWS)].mean(0)])
    )


def anchor_points(xy: np.ndarray, rounded: bool = True) -> np.ndarray:
    """The three alignment anchors (brow-L, brow-R, nose) from mediapipe mesh points.

    Args:
        xy: ``[K >= 468, 2]`` mesh points in frame pixels.
        rounded: True reproduces the official integer pipeline (:func:`mesh_to_106` then
            :func:`anchors_from_106`); False gives the same means without any rounding (sub-pixel,
            used before temporal smoothing).

    Returns:
        float64 ``[3, 2]`` frame pixels (x, y).
    """
    if rounded:
        return anchors_from_106(mesh_to_106(xy))
    xy = _check_mesh(xy)
    brow_l = np.mean([(xy[a] + xy[b]) / 2 for a, b in BROW_LEFT_PAIRS], axis=0)
    brow_r = np.mean([(xy[a] + xy[b]) / 2 for a, b in BROW_RIGHT_PAIRS], axis=0)
    nose = xy[list(NOSE_POINTS)].mean(axis=0)
    return np.stack([brow_l, brow_r, nose])
