"""Early no-face check: look for a face in a few frames before the whole video is aligned.

Aligning a video without any face used to run to the end before :class:`~latentsync.errors.NoFaceError`
(the landmarker on every frame, after the models were loaded). The probe looks at every frame of the
first ``head_s`` seconds and then at one frame every ``step_s`` seconds of the rest (at most
``max_sparse`` frames, spread evenly), and stops at the first face. A talking-head video has a face
in frame 0, so the probe costs one landmarker call; a video without a face costs ``head + sparse``
calls instead of one per frame (10 s at 25 fps: 50 + 16 = 66 instead of 250; one hour: 290 instead
of 90,000). A face that appears only later (an intro without a face) is found by the sparse probe;
a video whose face is visible only between two probe points (shorter than ``step_s``) is refused,
and the message says what was probed.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from latentsync.errors import NoFaceError

HEAD_SECONDS = 2.0  # every frame of the start
STEP_SECONDS = 0.5  # then one frame per half second
MAX_SPARSE = 240  # at most this many frames over the rest (long videos: wider steps)


def probe_indices(num_frames: int, fps: float, head_s: float = HEAD_SECONDS, step_s: float = STEP_SECONDS,
                  max_sparse: int = MAX_SPARSE) -> np.ndarray:
    """Frame indices the probe looks at, increasing: ``0 .. head-1``, then evenly spread samples.

    Args:
        num_frames: frames in the video (>= 1).
        fps: frame rate, Hz (> 0).
        head_s: seconds at the start probed frame by frame.
        step_s: spacing of the samples over the rest, seconds (widened to fit ``max_sparse``).
        max_sparse: most samples over the rest.

    Returns:
        int64 ``[K]``, ``K <= ceil(head_s * fps) + max_sparse``; all frames when the video is short.
    """
    head = min(int(num_frames), max(1, math.ceil(head_s * fps)))
    rest = int(num_frames) - head
    if rest <= 0:
        return np.arange(head, dtype=np.int64)
    n_sparse = min(int(max_sparse), math.ceil(rest / max(1.0, step_s * fps)))
    sparse = head + np.floor((np.arange(n_sparse) + 0.5) * rest / n_sparse).astype(np.int64)
    return np.concatenate([np.arange(head, dtype=np.int64), np.unique(sparse)])


def first_face_index(frames: Iterable[tuple[int, np.ndarray]], detect: Callable[[np.ndarray, int], object]) -> int | None:
    """Index of the first frame in which ``detect(frame, index)`` finds a face (not None), else None.

    Args:
        frames: ``(index, frame uint8 [H, W, 3] RGB)`` pairs, e.g. from
            :func:`latentsync.video.io.read_frames_at`.
        detect: a landmarker's ``detect`` (:class:`~latentsync.face.landmarks.Landmarker`).
    """
    for index, frame in frames:
        if detect(np.ascontiguousarray(frame), int(index)) is not None:
            return int(index)
    return None


def require_face_in_probe(frames: Iterable[tuple[int, np.ndarray]], detect: Callable[[np.ndarray, int], object],
                          indices: np.ndarray, fps: float, input_name: str = "video") -> int:
    """:func:`first_face_index` over the probe frames, or :class:`NoFaceError` when none has a face.

    Args:
        frames: the frames of ``indices`` (see :func:`first_face_index`).
        detect: the landmarker's ``detect``.
        indices: what :func:`probe_indices` gave (for the message).
        fps: frame rate, Hz (for the message).
        input_name: the input named in the message.

    Returns: the index of the first frame with a face.

    Raises:
        NoFaceError: naming the input, the frames probed and what to do.
    """
    found = first_face_index(frames, detect)
    if found is not None:
        return found
    head = int(np.sum(indices == np.arange(len(indices))))
    sparse = len(indices) - head
    where = f"any of its {head} frames" if not sparse else (
        f"the first {head / fps:.1f} s ({head} frames) nor in {sparse} frames sampled over the rest "
        f"(every {(indices[-1] - indices[head - 1]) / sparse / fps:.1f} s)")
    raise NoFaceError(f"{input_name}: no face found in {where}; LatentSync needs a visible, roughly frontal face")


def require_face_in_video(video, num_frames: int, fps: float, landmarker=None, input_name: str | None = None) -> int:
    """Probe a video file for a face (:func:`probe_indices`) before the whole video is aligned.

    Args:
        video: video file path.
        num_frames, fps: from :func:`latentsync.video.io.probe_video`.
        landmarker: a :class:`~latentsync.face.landmarks.Landmarker` to use (reset afterwards, so its
            tracking starts afresh for the real pass); default a mediapipe one, closed afterwards.
        input_name: the input named in the message (default ``video '<path>'``).

    Returns: the index of the first frame with a face.

    Raises:
        NoFaceError: no face in any probed frame.
        InvalidInputError: the video cannot be decoded.
    """
    from latentsync.face.landmarks import create_landmarker
    from latentsync.video.io import read_frames_at

    indices = probe_indices(num_frames, fps)
    lm = landmarker if landmarker is not None else create_landmarker(video_mode=True, fps=float(fps))
    try:
        return require_face_in_probe(read_frames_at(video, indices), lm.detect, indices, fps,
                                     input_name or f"video '{video}'")
    finally:
        if landmarker is None:
            lm.close()
        else:
            lm.reset()
