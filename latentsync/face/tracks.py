"""Face tracks: one identity per face, followed from frame to frame (beyond the official code).

The official pipeline takes whichever face the detector returns first in each frame, so with two
people the crop can jump between them. Here every detected face is assigned to a track: a
detection continues the track whose last box centre is nearest (within half a face size, the face
size being ``sqrt(box width * box height)``); a track not seen for up to ``max_gap`` frames resumes
when a face reappears there; a detection that overlaps an already matched one (IoU > 0.3, the
landmarker sometimes returns the same face twice) is dropped; any other detection starts a new
track. Pure numpy: mesh points in, track ids out.

:class:`FaceTracks` keeps, per track and frame, the few numbers later stages need (box, the three
alignment anchors, two mouth measures): about 130 bytes per face and frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latentsync.face.landmarks import anchor_points

# Mesh points: inner lips (upper 13, lower 14), nose tip (1), outer eye corners (33, 263).
UPPER_LIP, LOWER_LIP, NOSE_TIP = 13, 14, 1
EYE_OUTER = (33, 263)
MATCH_DISTANCE = 0.5  # max centre distance for a match, in face sizes
DUPLICATE_IOU = 0.3


def face_box(mesh: np.ndarray) -> np.ndarray:
    """Bounding box ``(x0, y0, x1, y1)`` float64 of mesh points ``[K, 2]`` (frame pixels)."""
    xy = np.asarray(mesh, dtype=np.float64)[:, :2]
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)])


def mouth_measures(mesh: np.ndarray) -> tuple[float, float]:
    """Inner-lip gap and lower-lip-to-nose distance, each divided by the outer eye-corner distance.

    Scale-free: the gap is ~0 closed and ~0.3 wide open; the second grows with the jaw drop.

    Args:
        mesh: mediapipe mesh points ``[K >= 468, 2]`` in pixels.
    """
    xy = np.asarray(mesh, dtype=np.float64)[:, :2]
    eyes = max(float(np.linalg.norm(xy[EYE_OUTER[0]] - xy[EYE_OUTER[1]])), 1e-6)
    gap = np.linalg.norm(xy[UPPER_LIP] - xy[LOWER_LIP])
    drop = np.linalg.norm(xy[LOWER_LIP] - xy[NOSE_TIP])
    return float(gap / eyes), float(drop / eyes)


def _size(box: np.ndarray) -> float:
    return float(np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@dataclass
class FaceTracker:
    """Assigns the faces of consecutive frames to tracks (see the module docstring).

    Args:
        max_gap: frames a track may be missing and still resume (default 50, 2 s at 25 fps).

    Attributes:
        boxes: last box of each track id, float64 ``[4]``.
        last_seen: last frame index of each track id.
    """

    max_gap: int = 50
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    last_seen: dict[int, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget every track (ids start again at 0)."""
        self.boxes.clear()
        self.last_seen.clear()

    def alive(self, frame_index: int) -> list[int]:
        """Ids of the tracks that may still resume at ``frame_index``."""
        return [t for t, seen in self.last_seen.items() if frame_index - seen <= self.max_gap]

    def update(self, frame_index: int, meshes: list[np.ndarray]) -> dict[int, int]:
        """Assign this frame's detections to tracks.

        Args:
            frame_index: absolute frame index (increasing between calls).
            meshes: the frame's detected meshes, each ``[K, 2]`` pixels.

        Returns:
            ``{track_id: index into meshes}`` for the faces kept (duplicates dropped).
        """
        boxes = [face_box(m) for m in meshes]
        alive = self.alive(frame_index)
        pairs = []
        for t in alive:
            prev = self.boxes[t]
            centre, size = (prev[:2] + prev[2:]) / 2, _size(prev)
            for d, box in enumerate(boxes):
                dist = np.linalg.norm((box[:2] + box[2:]) / 2 - centre) / size
                if dist <= MATCH_DISTANCE:
                    pairs.append((dist, t, d))
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for _, t, d in sorted(pairs):
            if t not in assigned and d not in used:
                assigned[t] = d
                used.add(d)
        for d, box in enumerate(boxes):
            if d in used or any(_iou(box, boxes[k]) > DUPLICATE_IOU for k in used):
                continue
            t = max([*self.last_seen, *assigned], default=-1) + 1
            assigned[t] = d
            used.add(d)
        for t, d in assigned.items():
            self.boxes[t] = boxes[d]
            self.last_seen[t] = frame_index
        return assigned


@dataclass
class FaceTracks:
    """Per-track, per-frame face data of a run of frames (missing faces are NaN).

    Attributes:
        start_index: absolute index of row 0.
        frame_size: ``(H, W)`` of the frames.
        boxes: float32 ``[T, N, 4]`` ``(x0, y0, x1, y1)`` pixels.
        anchors: float64 ``[T, N, 3, 2]`` sub-pixel anchors (brow-L, brow-R, nose), for smoothing.
        anchors_rounded: float64 ``[T, N, 3, 2]`` the official integer anchors (parity mode).
        mouth: float32 ``[T, N, 2]`` :func:`mouth_measures`.
    """

    start_index: int
    frame_size: tuple[int, int]
    boxes: np.ndarray
    anchors: np.ndarray
    anchors_rounded: np.ndarray
    mouth: np.ndarray

    @property
    def num_tracks(self) -> int:
        return int(self.boxes.shape[0])

    def __len__(self) -> int:
        return int(self.boxes.shape[1])

    def present(self) -> np.ndarray:
        """bool ``[T, N]``: track ``t`` has a face in frame ``n``."""
        return np.isfinite(self.mouth[..., 0])

    def rows(self, lo: int, hi: int) -> FaceTracks:
        """Frames ``lo .. hi - 1`` (relative to ``start_index``) as a new ``FaceTracks``."""
        return FaceTracks(
            self.start_index + lo, self.frame_size, self.boxes[:, lo:hi], self.anchors[:, lo:hi],
            self.anchors_rounded[:, lo:hi], self.mouth[:, lo:hi],
        )

    @classmethod
    def concat(cls, parts: list[FaceTracks]) -> FaceTracks:
        """Join the tracks of consecutive frame runs (track ids shared; missing rows padded NaN).

        Raises:
            ValueError: ``parts`` is empty.
        """
        if not parts:
            raise ValueError("FaceTracks.concat: expected at least one FaceTracks, got an empty list")
        t = max(p.num_tracks for p in parts)

        def pad(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.full((t - a.shape[0],) + a.shape[1:], np.nan, a.dtype)])

        fields = ("boxes", "anchors", "anchors_rounded", "mouth")
        joined = [np.concatenate([pad(getattr(p, f)) for p in parts], axis=1) for f in fields]
        return cls(parts[0].start_index, parts[0].frame_size, *joined)


class TrackRecorder:
    """Collects :class:`FaceTracks` rows frame by frame (the tracker's output plus the meshes)."""

    def __init__(self, start_index: int, frame_size: tuple[int, int]) -> None:
        self.start_index = int(start_index)
        self.frame_size = tuple(frame_size)
        self._rows: list[dict[int, tuple]] = []

    def add(self, assigned: dict[int, int], meshes: list[np.ndarray]) -> None:
        """Record one frame: ``assigned`` from :meth:`FaceTracker.update`, ``meshes`` its input."""
        self._rows.append(
            {
                t: (face_box(meshes[d]), anchor_points(meshes[d], rounded=False),
                    anchor_points(meshes[d], rounded=True), mouth_measures(meshes[d]))
                for t, d in assigned.items()
            }
        )

    def tracks(self) -> FaceTracks:
        """The recorded frames as arrays (track ids are rows)."""
        n = len(self._rows)
        t = 1 + max((k for row in self._rows for k in row), default=-1)
        boxes = np.full((t, n, 4), np.nan, np.float32)
        anchors = np.full((t, n, 3, 2), np.nan)
        rounded = np.full((t, n, 3, 2), np.nan)
        mouth = np.full((t, n, 2), np.nan, np.float32)
        for i, row in enumerate(self._rows):
            for k, (box, raw, rnd, measures) in row.items():
                boxes[k, i], anchors[k, i], rounded[k, i], mouth[k, i] = box, raw, rnd, measures
        return FaceTracks(self.start_index, self.frame_size, boxes, anchors, rounded, mouth)
