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
one): on the demo clips in tracking mode its anchors differ from the legacy ones by 3.0-4.7 px
(mean worst coordinate per frame; bench/bench_tasks_alignment.py). Most of that is not a fixed
mapping error: it varies smoothly over time (lag-1 autocorrelation ~0.8), largely as a shift of the
whole mesh, with a different pattern per clip and even between a clip and its mirror image; the
legacy mesh itself disagrees with its own mirrored run by 2.8-2.9 px. What is systematic is small:
the Tasks brows sit ~1 % of the brow distance further apart (wider faces) and the nose and brows a
little lower. :data:`TASKS_ANCHOR_OFFSETS` removes that part (fitted on demo1 + demo2, original and
mirrored; demo3 held out: 3.03 -> 2.58 px); the Tasks backend applies it to the mesh points that
feed each anchor, so both anchor paths (rounded and sub-pixel) see legacy-convention points.
"""

from __future__ import annotations

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

#: Mean legacy-minus-Tasks anchor offsets (brow-L, brow-R, nose) in the face frame of the Tasks
#: anchors: x along brow-L -> brow-R, y perpendicular towards the nose (a mirrored face gets the
#: mirrored frame), both in units of the brow distance. Fitted by bench/bench_tasks_alignment.py.
TASKS_ANCHOR_OFFSETS = np.array([[0.0075, -0.0050], [-0.0057, -0.0071], [-0.0036, -0.0109]])


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
            convention (:func:`to_legacy_anchor_convention`); False returns the model's raw points.
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
        ``legacy_anchors=False``; see :class:`Landmarker`)."""
        frame = _check_frame(frame)
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=frame)
        if self._video_mode:
            ts = max(int(round(frame_index * self._ms_per_frame)), self._last_ts + 1)
            self._last_ts = ts
            found = [] if self._single is None else self._single.detect_for_video(image, ts).face_landmarks or []
            found += self._landmarker.detect_for_video(image, ts).face_landmarks or []
        else:
            found = self._landmarker.detect(image).face_landmarks or []
        height, width = frame.shape[:2]
        faces = [_to_pixels(face, width, height) for face in found]
        return [to_legacy_anchor_convention(xy) for xy in faces] if self._legacy_anchors else faces

    def detect(self, frame: np.ndarray, frame_index: int) -> np.ndarray | None:
        """The first face of :meth:`detect_faces`, or None."""
        return next(iter(self.detect_faces(frame, frame_index)), None)

    def reset(self) -> None:
        self.close()
        self._last_ts = -1
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


def to_legacy_anchor_convention(xy: np.ndarray) -> np.ndarray:
    """Tasks mesh points with the anchor-feeding points moved by :data:`TASKS_ANCHOR_OFFSETS`.

    Each anchor's offset (face units, in the frame of the Tasks anchors) is turned into pixels and
    added to every mesh point that feeds that anchor (brow pairs, nose points), so the sub-pixel
    anchors move by exactly the offset; all other points are unchanged.

    Args:
        xy: float64 ``[K >= 468, 2]`` Tasks mesh points in frame pixels.

    Returns:
        float64 ``[K, 2]``, a new array.
    """
    xy = _check_mesh(xy).copy()
    _, axes, scale = face_frame(anchor_points(xy, rounded=False))
    shifts = TASKS_ANCHOR_OFFSETS @ axes * scale  # [3, 2] pixels
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
