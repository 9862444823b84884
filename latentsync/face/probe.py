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
from typing import Iterable, Iterator

import numpy as np
import torch

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


def first_face_index(frames: Iterable[tuple[int, np.ndarray | torch.Tensor]], aligner) -> int | None:
    """Index of the first frame in which ``aligner`` finds a face, else None.

    Each frame is aligned on its own (``aligner.align(frame[None], start_index=index)``), which
    restarts the aligner's tracking; its next call for the real pass (``start_index`` 0) restarts it
    again, so probing leaves no state behind.

    Args:
        frames: ``(index, frame uint8 [H, W, 3] RGB)`` pairs, increasing indices.
        aligner: :class:`~latentsync.face.aligner.FaceAligner` (anything with ``align``).
    """
    for index, frame in frames:
        if not aligner.align(frame[None], start_index=int(index)).no_face_indices:
            return int(index)
    return None


def frames_at(source, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray | torch.Tensor]]:
    """``(index, frame)`` of a frame source (:mod:`latentsync.video.sources`) at increasing ``indices``.

    A file source seeks (:func:`latentsync.video.io.read_frames_at`); any other source (an IMAGE
    batch in memory) is walked chunk by chunk, stopping after the last index.
    """
    from latentsync.video.sources import FileFrames

    if isinstance(source, FileFrames):
        from latentsync.video.io import read_frames_at

        for i, frame in read_frames_at(source.path, indices + source.start):
            yield i - source.start, frame
        return
    k, pos = 0, 0
    for chunk in source.chunks():
        while k < len(indices) and indices[k] < pos + chunk.shape[0]:
            yield int(indices[k]), chunk[int(indices[k]) - pos]
            k += 1
        pos += chunk.shape[0]
        if k == len(indices):
            return


def require_face_in_source(source, aligner) -> int:
    """Probe a frame source for a face (:func:`probe_indices`) before all of it is aligned.

    Args:
        source: a frame source (``num_frames``, ``fps`` (None = unknown, 25 assumed), ``name``,
            ``chunks()``), e.g. :class:`latentsync.video.sources.FileFrames`.
        aligner: see :func:`first_face_index`.

    Returns: the index of the first probed frame with a face.

    Raises:
        NoFaceError: no face in any probed frame; the message names the input and what was probed.
        InvalidInputError: the frames cannot be decoded.
    """
    fps = float(source.fps or 25.0)
    indices = probe_indices(source.num_frames, fps)
    found = first_face_index(frames_at(source, indices), aligner)
    if found is not None:
        return found
    head = int(np.sum(indices == np.arange(len(indices))))
    sparse = len(indices) - head
    where = f"any of its {head} frames" if not sparse else (
        f"the first {head / fps:.1f} s ({head} frames) nor in {sparse} frames sampled over the rest "
        f"(every {(indices[-1] - indices[head - 1]) / sparse / fps:.1f} s)")
    raise NoFaceError(f"{source.name}: no face found in {where}; LatentSync needs a visible, roughly frontal face")
