"""Frame sources: where the stages read a video's frames from, chunk by chunk, in order.

A frame source has ``num_frames``, ``frame_size`` ``(H, W)``, ``fps`` (Hz, or None when unknown),
``name`` (the input named in messages) and ``chunks(chunk=16)`` yielding uint8 ``[n, H, W, 3]`` RGB.
Reading twice restarts from the first frame. :class:`FileFrames` decodes a file (or a trimmed
window of it) with PyAV; the ComfyUI nodes add a source over an IMAGE batch (``nodes/``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from latentsync.errors import InvalidInputError
from latentsync.video.segments import take_frames


@dataclass(frozen=True)
class FileFrames:
    """Frames ``start .. start + num_frames - 1`` of a video file, decoded on demand (PyAV).

    Attributes:
        path: the video file (never written).
        start: first frame index.
        num_frames: frames in the window.
        frame_size: ``(H, W)`` as decoded (rotation applied).
        fps: the stream's frame rate, Hz.
        name: input named in messages.
    """

    path: str
    start: int
    num_frames: int
    frame_size: tuple[int, int]
    fps: Fraction
    name: str

    @classmethod
    def open(cls, path: str | os.PathLike, start_time: float = 0.0, duration: float = 0.0,
             name: str | None = None) -> "FileFrames":
        """Probe ``path`` and select a trim window (seconds; ``duration`` 0 = to the end).

        The window holds the frames whose presentation time ``i / fps`` lies in
        ``[start_time, start_time + duration)``, the rule of ComfyUI's trimmed ``VideoFromFile``.

        Raises:
            InvalidInputError: unreadable file, negative times, or a window without frames.
        """
        from latentsync.video.io import probe_video
        from latentsync.video.timeline import fps_to_fraction

        info = probe_video(path)
        name = name or f"video '{path}'"
        if not (math.isfinite(start_time) and math.isfinite(duration)) or start_time < 0 or duration < 0:
            raise InvalidInputError(f"{name}: trim start {start_time} s / duration {duration} s must be >= 0")
        fps = fps_to_fraction(info.fps)
        start = min(info.num_frames, math.ceil(start_time * fps - 1e-6))
        end = info.num_frames if duration == 0 else min(info.num_frames, math.ceil((start_time + duration) * fps - 1e-6))
        if end <= start:
            raise InvalidInputError(
                f"{name}: the trim window {start_time:g} s + {duration:g} s holds no frame of the "
                f"{info.num_frames}-frame video ({info.duration_s:.3f} s)"
            )
        return cls(str(os.fspath(path)), int(start), int(end - start), (info.height, info.width), fps, name)

    def chunks(self, chunk: int = 16) -> Iterator[np.ndarray]:
        """uint8 ``[n, H, W, 3]`` chunks of the window, in order (``n <= chunk``)."""
        from latentsync.video.io import iter_frames

        return take_frames(iter_frames(self.path, chunk_size=chunk, start=self.start), self.num_frames)
