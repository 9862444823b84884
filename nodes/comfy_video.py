"""ComfyUI VIDEO for the streaming path: frame sources over a VIDEO, the temp folder, VIDEO results.

A VIDEO (``comfy_api`` ``VideoInput``; core LoadVideo gives a ``VideoFromFile``) is read through its
stream source (``get_stream_source()``: a file path, or a BytesIO that is copied to a temp file) and
decoded chunk by chunk with PyAV (:class:`latentsync.video.sources.FileFrames`); its frames are never
materialised as an IMAGE. A LoadVideo trim (``get_active_trim_window()``, ComfyUI >= 0.3.7x) is
honoured; a crop, which the stream source does not carry, is refused. Results are encoded into
ComfyUI's temp folder and returned as ``VideoFromFile``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import uuid
from typing import Any, Iterator

import numpy as np


def temp_folder() -> str:
    """ComfyUI's temp folder (``--temp-directory``; emptied by ComfyUI at start-up), created if needed."""
    import folder_paths

    path = folder_paths.get_temp_directory()
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A private folder in ComfyUI's temp folder, removed on exit (also on errors and Cancel)."""
    with tempfile.TemporaryDirectory(prefix="latentsync-", dir=temp_folder()) as d:
        yield d


def is_video(value: Any) -> bool:
    """Whether a socket value is a ComfyUI VIDEO (anything with ``get_stream_source``)."""
    return hasattr(value, "get_stream_source") and not hasattr(value, "shape")


@contextlib.contextmanager
def video_frames(video: Any, name: str = "images") -> Iterator[Any]:
    """A :class:`~latentsync.video.sources.FileFrames` over a VIDEO input, for one node execution.

    Raises:
        ValueError: the VIDEO carries a crop (not honoured by the stream path), or its trim window
            holds no frame; InvalidInputError from PyAV for an unreadable stream.
    """
    from latentsync.video.sources import FileFrames

    source = video.get_stream_source()
    label = f"input {name!r}"
    start, duration = video.get_active_trim_window() if hasattr(video, "get_active_trim_window") else (0.0, 0.0)
    with contextlib.ExitStack() as stack:
        if isinstance(source, io.IOBase):
            folder = stack.enter_context(scratch_dir())
            path = os.path.join(folder, "input.video")
            source.seek(0)
            with open(path, "wb") as fh:
                shutil.copyfileobj(source, fh)
            source = path
        frames = FileFrames.open(source, float(start), float(duration), name=f"{label} (VIDEO {os.path.basename(str(source))!r})")
        h, w = frames.frame_size
        if tuple(video.get_dimensions()) not in ((w, h), (h, w)):
            raise ValueError(
                f"{label}: the VIDEO is cropped to {video.get_dimensions()} (W, H); LatentSync reads the "
                f"stream itself and cannot apply a LoadVideo crop. Remove the crop, or crop the frames "
                f"first (GetVideoComponents -> IMAGE)"
            )
        yield frames


def audio_track(audio: Any, num_frames: int, fps: float) -> tuple[np.ndarray | None, int]:
    """An AUDIO for muxing: float32 ``[C, T]`` (C 1 or 2, more channels mixed to mono) cut to the
    span of ``num_frames`` frames (never padded), and its sample rate; ``(None, 0)`` without audio."""
    import torch

    from latentsync.video.timeline import audio_samples_for_frames

    if audio is None:
        return None, 0
    w = torch.as_tensor(audio["waveform"]).detach().to("cpu", torch.float32)
    rate = int(audio["sample_rate"])
    w = w[0] if w.ndim == 3 else (w[None] if w.ndim == 1 else w)
    if w.shape[0] > 2:
        w = w.mean(0, keepdim=True)
    n = min(int(w.shape[-1]), audio_samples_for_frames(num_frames, fps, rate))
    return np.ascontiguousarray(w[:, :n].numpy()), rate


def write_video(chunks: Iterator[tuple[int, Any]], num_frames: int, source: Any, audio: Any) -> Any:
    """Encode ``(start, uint8 frames)`` chunks (+ AUDIO) into ComfyUI's temp folder -> ``VideoFromFile``.

    H.264 + AAC at the source's fps; the file appears only when every frame is written (an error or
    Cancel removes the partial file).
    """
    from comfy_api.latest import InputImpl

    from latentsync.video.io import VideoWriter

    h, w = source.frame_size
    waveform, rate = audio_track(audio, num_frames, float(source.fps))
    path = os.path.join(temp_folder(), f"latentsync_{uuid.uuid4().hex[:12]}.mp4")
    with VideoWriter(path, source.fps, w, h, audio=waveform, sample_rate=rate or 16000) as writer:
        for _, frames in chunks:
            writer.write(np.asarray(frames))
    return InputImpl.VideoFromFile(path)


@contextlib.contextmanager
def frame_source(value: Any, name: str = "images") -> Iterator[Any]:
    """The backend frame source of an IMAGE or VIDEO socket value (for one node execution)."""
    from .comfy_convert import ImageFrames

    if is_video(value):
        with video_frames(value, name) as frames:
            yield frames
    else:
        yield ImageFrames(value, name)


def video_fps(video: Any) -> float:
    """Frame rate (Hz) of a VIDEO input as the stream path decodes it."""
    with video_frames(video, "video") as frames:
        return float(frames.fps)
