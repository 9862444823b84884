"""Video and audio file I/O with PyAV (no system ffmpeg, no imageio, no torchvision).

What the official pipeline does instead (spec 1.5, 1.12, 7.1-7.4): it re-encodes every input to
25 fps with an ffmpeg subprocess into ``./temp``, reads all frames with OpenCV into one array, and
writes the result twice (crf 13, then crf 18 at the mux) through unquoted shell commands. Here:

* :func:`probe_video` reads the stream facts (fps, frame count, size after rotation) and decodes the
  first frame, so a file that cannot be decoded is rejected before any model work starts.
* :func:`iter_frames` streams uint8 RGB chunks ``[n, H, W, 3]``; memory does not grow with the video
  length. The source fps is kept (the audio windows follow any fps, spec 1.4 step 6).
* :func:`read_audio` decodes any PyAV-readable file (WAV, MP3, the audio track of an MP4, ...) to
  16 kHz mono with libswresample, as ``ffmpeg -ac 1 -ar 16000 -f s16le`` does in spec 1.4 step 1.
* :class:`VideoWriter` encodes H.264 + AAC in one pass into a temporary file next to the output and
  renames it on success (``os.replace``); on any error the temporary file is removed.

Every problem with a file is raised as :class:`~latentsync.errors.InvalidInputError` with a one-line
message naming the file; PyAV exceptions never leave this module.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import av
import numpy as np

from latentsync.errors import InvalidInputError
from latentsync.types import VideoInfo
from latentsync.video.timeline import fps_to_fraction

PathLike = Union[str, "os.PathLike[str]"]

logger = logging.getLogger(__name__)

__all__ = [
    "probe_video",
    "iter_frames",
    "read_video",
    "read_frames_at",
    "read_audio",
    "fps_to_fraction",
    "VideoWriter",
    "encoded_size",
    "check_finite_audio",
    "check_output_writable",
]

# Colour handling. Decoding uses the matrix and range the file is tagged with (libswscale's BT.601
# default when untagged, which is also what OpenCV/ffmpeg give). Encoding converts RGB -> YUV with
# BT.709, limited range, and tags the stream so, so players and our reader invert the same matrix.
_ENCODE_COLORSPACE = "ITU709"
_ENCODE_TAG = 1  # AVCOL_SPC/PRI/TRC_BT709
_ENCODE_RANGE_MPEG = 1  # AVCOL_RANGE_MPEG (limited, 16-235)

_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """One line describing a PyAV/OS error (no traceback, no multi-line ffmpeg log)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _check_input_file(path: PathLike, what: str) -> Path:
    """Return ``path`` as a Path after checking it is a non-empty regular file."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise InvalidInputError(f"{what} file {str(p)!r} does not exist")
    if p.is_dir():
        raise InvalidInputError(f"{what} path {str(p)!r} is a directory, expected a media file")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise InvalidInputError(f"{what} file {str(p)!r} cannot be read: {_describe(exc)}") from None
    if size == 0:
        raise InvalidInputError(f"{what} file {str(p)!r} is empty (0 bytes)")
    return p


def _open_input(p: Path, what: str) -> "av.container.InputContainer":
    try:
        return av.open(str(p), mode="r")
    except Exception as exc:  # av.FFmpegError, OSError, UnicodeDecodeError from metadata, ...
        raise InvalidInputError(
            f"{what} file {str(p)!r} cannot be opened as media (corrupt, truncated or not a "
            f"video/audio file): {_describe(exc)}"
        ) from None


def _video_stream(container, p: Path):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise InvalidInputError(
            f"video file {str(p)!r} has no video stream (found streams: {', '.join(kinds)})"
        )
    return container.streams.video[0]


def _stream_fps(stream, p: Path) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate.numerator, rate.denominator)
    raise InvalidInputError(f"video file {str(p)!r} declares no frame rate")


def _rotation_k(rotation: float | int | None) -> int:
    """Number of counter-clockwise quarter turns (for ``np.rot90``) that display the frame upright.

    ``VideoFrame.rotation`` is the counter-clockwise angle of the display matrix, so the frame is
    shown upright after rotating it counter-clockwise by that angle (ffmpeg's autorotate).
    """
    if not rotation:
        return 0
    return int(round(float(rotation) / 90.0)) % 4


def _to_rgb(frame: "av.VideoFrame", k: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded frame -> uint8 ``[H, W, 3]`` RGB, honouring the frame's colour range and rotation.

    ``size`` = stored ``(width, height)`` of the first frame; a stream that changes resolution
    part-way is scaled back to it so every chunk has one shape.
    """
    src_range = frame.color_range if frame.color_range in (1, 2) else None
    width = height = None
    if size is not None and (frame.width, frame.height) != size:
        width, height = size
    rgb = frame.reformat(
        width=width, height=height, format="rgb24", src_color_range=src_range
    ).to_ndarray()
    if k:
        rgb = np.ascontiguousarray(np.rot90(rgb, k))
    return rgb


class _Probe:
    """Internal probe result: public VideoInfo plus what the frame reader needs."""

    def __init__(self, info: VideoInfo, fps: Fraction, rot_k: int, first_pts: int | None, time_base,
                 stored_size: tuple[int, int]):
        self.info = info
        self.stored_size = stored_size
        self.fps = fps
        self.rot_k = rot_k
        self.first_pts = first_pts
        self.time_base = time_base


def _probe(path: PathLike) -> _Probe:
    p = _check_input_file(path, "video")
    container = _open_input(p, "video")
    try:
        stream = _video_stream(container, p)
        fps = _stream_fps(stream, p)
        time_base = stream.time_base

        # Frame count: demux the packets of the video stream (no decoding, a few ms per minute of
        # video). The container's own count (stream.frames) is absent for MKV/WebM/AVI and wrong
        # for truncated or edited files; the packet count is what the decoder will be fed.
        try:
            num_frames = sum(1 for pkt in container.demux(stream) if pkt.size > 0)
        except Exception as exc:
            raise InvalidInputError(
                f"video file {str(p)!r} is corrupt or truncated (demuxing failed): {_describe(exc)}"
            ) from None
        if num_frames == 0:
            raise InvalidInputError(f"video file {str(p)!r} has a video stream but no frames")
        # MP4/MOV store the sample table up front; when the data behind it is cut off, demuxing
        # just stops early. A shortfall beyond a couple of frames (edit lists) means truncation.
        declared = int(stream.frames or 0)
        if declared > 0 and num_frames < declared - max(2, declared // 100):
            raise InvalidInputError(
                f"video file {str(p)!r} is truncated: its index lists {declared} frames but only "
                f"{num_frames} are present"
            )

        # Decode the first frame: proves the file is decodable and gives rotation and timestamps.
        # Reopened rather than ``seek(0)``: after a seek the image2 demuxer of a still JPEG yields
        # nothing, while a fresh open yields its one frame (a still is a valid one-frame video).
        container.close()
        container = _open_input(p, "video")
        stream = container.streams.video[0]
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except Exception as exc:
            raise InvalidInputError(
                f"video file {str(p)!r} cannot be decoded (corrupt or truncated): {_describe(exc)}"
            ) from None
        if first is None:
            raise InvalidInputError(f"video file {str(p)!r} contains no decodable video frame")

        rot_k = _rotation_k(first.rotation)
        width, height = first.width, first.height
        if rot_k % 2 == 1:
            width, height = height, width
        fps_f = float(fps)
        info = VideoInfo(
            fps=fps_f,
            num_frames=int(num_frames),
            width=int(width),
            height=int(height),
            duration_s=float(num_frames / fps_f),
        )
        return _Probe(info, fps, rot_k, first.pts, time_base, (first.width, first.height))
    finally:
        container.close()


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------


def probe_video(path: PathLike) -> VideoInfo:
    """Read the facts of the first video stream of a file without decoding it all.

    Args:
        path: video file (any container/codec PyAV decodes: MP4/MOV/MKV/WebM/AVI, H.264/HEVC/VP9/...).

    Returns:
        :class:`~latentsync.types.VideoInfo` with ``fps`` (float, the stream's average frame rate,
        e.g. 25.0 or 29.97), ``num_frames`` (number of video packets, counted by demuxing),
        ``width``/``height`` in pixels as displayed (swapped when the file carries a 90/270 degree
        rotation), and ``duration_s = num_frames / fps``.

    Raises:
        InvalidInputError: missing path, a directory, an empty file, a file PyAV cannot open or
            decode (corrupt/truncated), a file without a video stream or without frames.
    """
    return _probe(path).info


def iter_frames(path: PathLike, chunk_size: int = 16, start: int = 0) -> Iterator[np.ndarray]:
    """Decode a video as a stream of RGB chunks (constant memory, threaded decoding).

    Frames come in decode-output (presentation) order; no frame is dropped or duplicated, so a
    variable-frame-rate file is read as if it were constant at ``probe_video(path).fps``. Rotation
    metadata is applied (frames are upright, shape as :func:`probe_video`). If the file's last
    packets are damaged the decoder may return a few frames fewer than ``num_frames``; callers
    count what they receive. Colour: the file's YUV matrix/range tags are used (libswscale's fast
    path, as OpenCV/ffmpeg; within ~2 levels of an exact conversion).

    Args:
        path: video file.
        chunk_size: frames per chunk, >= 1. The last chunk may be shorter.
        start: index of the first frame to return, >= 0. With ``start > 0`` the reader seeks to the
            key frame before it and drops the frames in between (timestamp-based index).

    Yields:
        np.ndarray uint8 ``[n, H, W, 3]`` RGB 0..255, ``1 <= n <= chunk_size``; each chunk is a new
        array the caller may keep.

    Raises:
        InvalidInputError: as :func:`probe_video`; also if decoding fails part-way (message gives
            the frame index reached) or ``chunk_size``/``start`` are out of range.
    """
    if int(chunk_size) < 1:
        raise InvalidInputError(f"iter_frames: chunk_size must be >= 1, got {chunk_size}")
    if int(start) < 0:
        raise InvalidInputError(f"iter_frames: start must be >= 0, got {start}")
    chunk_size, start = int(chunk_size), int(start)
    pr = _probe(path)  # eager: a bad file fails here, at the call, not at the first next()
    if start >= pr.info.num_frames:
        return iter(())
    return _iter_frames(Path(os.fspath(path)), pr, chunk_size, start)


def _iter_frames(p: Path, pr: _Probe, chunk_size: int, start: int) -> Iterator[np.ndarray]:
    container = _open_input(p, "video")
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        use_pts = start > 0 and pr.first_pts is not None and pr.time_base is not None
        index = 0
        if use_pts:
            # Seek to the key frame at or before the wanted frame; frame indices then come from
            # timestamps: idx = round((pts - first_pts) * time_base * fps).
            target_pts = pr.first_pts + int(math.floor(start / pr.fps / pr.time_base))
            try:
                container.seek(target_pts, backward=True, any_frame=False, stream=stream)
            except Exception:
                use_pts = False
                container.close()
                container = _open_input(p, "video")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
        first_pts, frames_per_tick = pr.first_pts, (pr.time_base * pr.fps if pr.time_base else None)

        buf: list[np.ndarray] = []
        last = -1
        try:
            for frame in container.decode(stream):
                if use_pts and frame.pts is not None:
                    index = int(round((frame.pts - first_pts) * frames_per_tick))
                    if index <= last:  # duplicate/odd timestamp: keep counting sequentially
                        index = last + 1
                elif use_pts and frame.pts is None:
                    index = last + 1
                last = index
                if index >= start:
                    buf.append(_to_rgb(frame, pr.rot_k, pr.stored_size))
                    if len(buf) == chunk_size:
                        yield np.stack(buf)
                        buf = []
                index += 1
        except InvalidInputError:
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise InvalidInputError(
                f"video file {str(p)!r} cannot be decoded after frame {last + 1} "
                f"(corrupt or truncated): {_describe(exc)}"
            ) from None
        if buf:
            yield np.stack(buf)
    finally:
        container.close()


def read_frames_at(path: PathLike, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Decode only the frames ``indices`` (increasing) of a video, seeking across large gaps.

    A run of indices less than two seconds apart is decoded forward in one pass; a larger gap
    reopens the file and seeks to the key frame before the next index (see :func:`iter_frames`), so
    sampling a long video costs about one GOP per sample, not a decode of the whole file.

    Args:
        path: video file.
        indices: strictly increasing frame indices in ``[0, num_frames)``.

    Yields:
        ``(index, frame uint8 [H, W, 3] RGB)``; an index past the frames the decoder actually
        returns (damaged tail) is skipped.

    Raises:
        InvalidInputError: as :func:`iter_frames`, or indices not increasing / out of range.
    """
    pr = _probe(path)
    idx = [int(i) for i in indices]
    if any(b <= a for a, b in zip(idx, idx[1:])) or (idx and not 0 <= idx[0] <= idx[-1] < pr.info.num_frames):
        raise InvalidInputError(
            f"read_frames_at: expected increasing indices in 0..{pr.info.num_frames - 1}, got {idx[:8]}..."
        )
    return _read_frames_at(Path(os.fspath(path)), pr, idx)


def _read_frames_at(p: Path, pr: _Probe, idx: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    gap = max(1, int(2 * pr.fps))
    k = 0
    while k < len(idx):
        run_end = k + 1  # indices[k:run_end] are decoded in one forward pass
        while run_end < len(idx) and idx[run_end] - idx[run_end - 1] <= gap:
            run_end += 1
        wanted = set(idx[k:run_end])
        pos = idx[k]
        for chunk in _iter_frames(p, pr, 1, idx[k]):
            if pos in wanted:
                yield pos, chunk[0]
            pos += 1
            if pos > idx[run_end - 1]:
                break
        k = run_end


def read_video(path: PathLike, max_frames: int | None = None) -> tuple[np.ndarray, VideoInfo]:
    """Decode a whole (short) video into one array; prefer :func:`iter_frames` for long inputs.

    The array is allocated once from the probed count (no list-of-frames copy).

    Args:
        path: video file.
        max_frames: read at most this many frames from the start (None = all).

    Returns:
        ``(frames uint8 [N, H, W, 3] RGB, VideoInfo)``; ``N`` is the number actually decoded.

    Raises:
        InvalidInputError: as :func:`iter_frames`.
    """
    info = probe_video(path)
    n = info.num_frames if max_frames is None else min(info.num_frames, max(0, int(max_frames)))
    out = np.empty((n, info.height, info.width, 3), dtype=np.uint8)
    filled = 0
    if n > 0:
        for chunk in iter_frames(path, chunk_size=16):
            take = min(len(chunk), n - filled)
            out[filled : filled + take] = chunk[:take]
            filled += take
            if filled >= n:
                break
    return out[:filled], info


def read_audio(path: PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of a file to a mono waveform at ``sample_rate`` (spec 1.4 step 1).

    Decoding and conversion follow the official ``ffmpeg -ac 1 -ar 16000`` + ``/ 32768`` path:
    libswresample downmixes to mono and resamples (its default filter), output as signed 16-bit,
    then divided by 32768. Works for WAV, MP3, FLAC, the AAC track of an MP4/MOV, ...

    Args:
        path: audio or video file.
        sample_rate: output rate in Hz (> 0), 16000 for Whisper.

    Returns:
        np.ndarray float32 ``[T]`` in ``[-1, 1)``, ``T`` samples at ``sample_rate``.

    Raises:
        InvalidInputError: missing/empty/corrupt file, no audio stream, no decodable sample, or a
            NaN / infinite sample in a float file (the message gives the first one's time).
    """
    if int(sample_rate) <= 0:
        raise InvalidInputError(f"read_audio: sample_rate must be > 0 Hz, got {sample_rate}")
    p = _check_input_file(path, "audio")
    container = _open_input(p, "audio")
    try:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise InvalidInputError(
                f"audio file {str(p)!r} has no audio stream (found streams: {', '.join(kinds)})"
            )
        stream = container.streams.audio[0]
        source_rate = int(stream.codec_context.sample_rate or sample_rate)
        declared = None
        exact_duration = "mp4" in container.format.name or "mov" in container.format.name
        if exact_duration and stream.duration and stream.time_base:
            declared = int(round(float(stream.duration * stream.time_base) * int(sample_rate)))
        try:
            parts = _resample_to_mono_s16(container.decode(stream), sample_rate, f"audio file {str(p)!r}")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise InvalidInputError(
                f"audio file {str(p)!r} cannot be decoded (corrupt or truncated): {_describe(exc)}"
            ) from None
    finally:
        container.close()
    if not parts or sum(len(x) for x in parts) == 0:
        raise InvalidInputError(f"audio file {str(p)!r} has an audio stream but no decodable samples")
    pcm = np.concatenate(parts)
    # The AAC decoder returns the encoder's end padding (up to one codec frame: 1024 samples, 64 ms
    # at 16 kHz). MP4/MOV state the exact stream duration (edit list), so cut that padding off; a
    # larger mismatch means the metadata is unreliable and the decoded length is kept.
    if declared is not None:
        excess = len(pcm) - declared
        if 0 < excess <= 2 * 2048 * sample_rate // max(source_rate, 1) + 1:
            pcm = pcm[:declared]
    return _s16_to_float(pcm)


_FLOAT_SAMPLE_FORMATS = ("flt", "fltp", "dbl", "dblp")


def check_finite_audio(samples: np.ndarray, what: str, sample_rate: int, offset: int = 0) -> None:
    """Refuse NaN / infinite audio samples (libswresample would turn them into full-scale -1.0).

    Args:
        samples: float ``[C, T]`` block of a waveform.
        what: the input as the message names it, e.g. ``"audio file 'x.wav'"`` or ``"input 'audio'"``.
        sample_rate: rate of ``samples`` in Hz, for the time in the message.
        offset: index of the block's first sample in the whole waveform.

    Raises:
        InvalidInputError: naming ``what``, the first non-finite sample (index and seconds) and its value.
    """
    bad = ~np.isfinite(samples)
    if not bad.any():
        return
    t = int(np.argmax(bad.any(axis=0)))
    c = int(np.argmax(bad[:, t]))
    raise InvalidInputError(
        f"{what}: sample {offset + t} (at {(offset + t) / sample_rate:.3f} s, channel {c}) is "
        f"{samples[c, t]}; expected finite samples in -1..1 (repair or re-export the audio)"
    )


def _resample_to_mono_s16(frames: Iterable[av.AudioFrame], sample_rate: int, what: str) -> list[np.ndarray]:
    """Downmix + resample audio frames with libswresample to mono signed 16-bit at ``sample_rate``.

    The one resampler of the package (used by :func:`read_audio` and :func:`resample_audio`); frame
    timestamps are dropped so that gaps or odd pts do not make it insert or drop samples. Float
    frames are checked with :func:`check_finite_audio` first (``what`` names the input).

    Returns:
        list of int16 ``[n_i]`` blocks (possibly empty), flushed at the end.

    Raises:
        InvalidInputError: a NaN / infinite sample.
    """
    resampler = av.AudioResampler(format="s16", layout="mono", rate=int(sample_rate))
    parts: list[np.ndarray] = []
    offset = 0
    for frame in frames:
        if frame.format.name in _FLOAT_SAMPLE_FORMATS:
            block = frame.to_ndarray()
            if not frame.format.is_planar:  # packed: [1, T * C] interleaved
                block = block.reshape(-1, len(frame.layout.channels)).T
            check_finite_audio(block, what, frame.sample_rate, offset)
        offset += frame.samples
        frame.pts = None  # let the resampler ignore gaps/odd timestamps
        for out in resampler.resample(frame):
            parts.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    return parts


def _s16_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 in ``[-1, 1)`` (``/ 32768``, the official conversion)."""
    return (pcm.astype(np.float32) / np.float32(32768.0)).astype(np.float32, copy=False)


def resample_audio(waveform, sample_rate: int, target_rate: int = 16000, what: str = "audio") -> np.ndarray:
    """An in-memory waveform as mono float32 at ``target_rate`` (spec 1.4 step 1).

    Same libswresample path as :func:`read_audio` (downmix, resample, 16-bit quantisation,
    ``/ 32768``), so a file and its decoded samples give the same Whisper input. Mono input already at
    ``target_rate`` is returned unchanged (as float32, no quantisation). Channel counts other than 1
    or 2 are averaged to mono first (no standard layout name for libswresample).

    Args:
        waveform: float ``[C, T]`` or ``[T]`` (numpy or torch), nominally -1..1.
        sample_rate: rate of ``waveform`` in Hz (> 0).
        target_rate: output rate in Hz (> 0), 16000 for Whisper.
        what: the input as error messages name it (e.g. ``"input 'audio'"``).

    Returns:
        np.ndarray float32 ``[T']`` mono, ``T' ~= T * target_rate / sample_rate``.

    Raises:
        InvalidInputError: a waveform that is not 1-D/2-D, has 0 samples or 0 channels, a rate <= 0,
            or a NaN / infinite sample (the message gives the first one's index and time).
    """
    w = waveform.detach().cpu().numpy() if hasattr(waveform, "detach") else np.asarray(waveform)
    w = w.astype(np.float32, copy=False)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise InvalidInputError(
            f"{what}: expected a waveform [C, T] or [T] with C, T > 0, got shape {tuple(np.shape(waveform))}"
        )
    if int(sample_rate) <= 0 or int(target_rate) <= 0:
        raise InvalidInputError(
            f"{what}: sample rates must be > 0 Hz, got sample_rate={sample_rate}, target_rate={target_rate}"
        )
    check_finite_audio(w, what, int(sample_rate))
    if w.shape[0] == 1 and int(sample_rate) == int(target_rate):
        return np.ascontiguousarray(w[0], dtype=np.float32)
    layout = {1: "mono", 2: "stereo"}.get(w.shape[0])
    if layout is None:  # no standard layout name: downmix by the mean first
        w, layout = w.mean(axis=0, keepdims=True), "mono"

    def frames() -> Iterator[av.AudioFrame]:
        block = 1 << 16
        for s in range(0, w.shape[1], block):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(w[:, s : s + block], dtype=np.float32), format="fltp", layout=layout
            )
            frame.sample_rate = int(sample_rate)
            yield frame

    parts = _resample_to_mono_s16(frames(), target_rate, what)
    return _s16_to_float(np.concatenate(parts) if parts else np.zeros(0, np.int16))


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


def encoded_size(width: int, height: int) -> tuple[int, int]:
    """Size ``(width, height)`` in pixels that :class:`VideoWriter` encodes a ``width x height`` video at.

    H.264 in yuv420p (the only 4:2:0 layout browsers, QuickTime and ComfyUI previews play) stores
    chroma at half resolution and can crop the picture only by 2 pixels, so an odd width or height
    is padded by one pixel on the right / bottom (the last column / row repeated); even sizes are
    kept exactly.
    """
    return int(width) + int(width) % 2, int(height) + int(height) % 2


def check_output_writable(path: PathLike) -> None:
    """Prove that a file can be created in the folder of ``path``: a hidden probe file is created
    there and removed again (``path`` itself is not touched).

    Raises:
        InvalidInputError: the folder is missing, read-only, full, or not permitted to this user.
    """
    folder = Path(os.fspath(path)).parent
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise InvalidInputError(f"output folder {str(folder)!r} does not exist")
    probe = folder / f".latentsync-write-probe-{uuid.uuid4().hex[:12]}"
    try:
        with open(probe, "xb") as fh:
            fh.write(b"0")
    except OSError as exc:
        raise InvalidInputError(
            f"output folder {str(folder)!r} is not writable ({exc.strerror or _describe(exc)}); "
            "choose another --output folder"
        ) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(os.path.realpath(a)) == os.path.abspath(os.path.realpath(b))


class VideoWriter:
    """Write RGB frames (+ optional audio) to an H.264/AAC file, atomically.

    Usage::

        with VideoWriter("out.mp4", fps=25.0, width=1080, height=1920,
                         audio=waveform_16k, inputs=(video_path, audio_path)) as w:
            for chunk in chunks:          # uint8 [n, 1920, 1080, 3]
                w.write(chunk)

    The file is encoded into ``.<name>.<random>.tmp<ext>`` in the output folder and moved onto
    ``path`` with ``os.replace`` only when the ``with`` block (or :meth:`close`) finishes without
    error; otherwise the temporary file is deleted and ``path`` is left as it was.

    Video: libx264, yuv420p, ``crf`` (0-51, lower = better; 18 is visually lossless for most
    content), BT.709 limited range (tagged), time base ``1/fps`` with ``fps`` kept exact as a
    Fraction (29.97 -> 30000/1001, see :func:`fps_to_fraction`). yuv420p needs an even width and
    height: an odd size is padded by one pixel on the right/bottom, repeating the last column/row
    (``out_width``/``out_height`` give the encoded size, see :func:`encoded_size`; no pixel of the
    input is lost), and a warning is logged saying so.

    Audio: ``audio`` is written in full (the caller cuts it to the video length, spec 1.12):
    float ``[T]`` mono or ``[C, T]`` (C = 1 or 2) at ``sample_rate`` Hz, values in -1..1 (clipped),
    encoded AAC-LC from fltp frames, interleaved with the video as frames are written.

    Args:
        path: output file; extension .mp4, .m4v, .mov or .mkv. Its folder must exist.
        fps: frames per second (> 0), float or Fraction.
        width, height: frame size of the frames passed to :meth:`write`, pixels (>= 2).
        audio: optional waveform (numpy array or anything ``np.asarray`` accepts, e.g. a CPU tensor).
        sample_rate: audio rate in Hz.
        crf: libx264 constant rate factor, 0..51.
        inputs: paths the output must not overwrite (the source video and audio).
        preset: libx264 preset ("ultrafast" ... "veryslow").
        faststart: put the MP4 index at the front (quick start in browsers / ComfyUI previews).

    Raises:
        InvalidInputError: bad argument, output equal to one of ``inputs``, output is a directory,
            missing or unwritable output folder, unsupported extension, wrong frame shape/dtype in :meth:`write`,
            or an encoder/muxer failure (then nothing is written at ``path``).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float | Fraction,
        width: int,
        height: int,
        audio=None,
        sample_rate: int = 16000,
        crf: int = 18,
        *,
        inputs: Sequence[PathLike] = (),
        preset: str = "medium",
        faststart: bool = True,
    ):
        self.path = Path(os.fspath(path))
        self.fps = fps_to_fraction(fps)
        self.width, self.height = int(width), int(height)
        if self.width < 2 or self.height < 2:
            raise InvalidInputError(
                f"VideoWriter: frame size must be at least 2x2 pixels, got {width}x{height}"
            )
        if not 0 <= int(crf) <= 51:
            raise InvalidInputError(f"VideoWriter: crf must be in 0..51, got {crf}")
        self.crf = int(crf)
        self.out_width, self.out_height = encoded_size(self.width, self.height)
        self.sample_rate = int(sample_rate)

        fmt = _CONTAINER_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise InvalidInputError(
                f"output {str(self.path)!r}: unsupported extension {self.path.suffix!r}, "
                f"expected one of {', '.join(sorted(_CONTAINER_FORMATS))}"
            )
        if self.path.is_dir():
            raise InvalidInputError(f"output {str(self.path)!r} is a directory, expected a file path")
        folder = self.path.parent if str(self.path.parent) else Path(".")
        for inp in inputs:
            if inp is not None and _same_file(self.path, Path(os.fspath(inp))):
                raise InvalidInputError(
                    f"output {str(self.path)!r} is the same file as input {os.fspath(inp)!r}; "
                    "choose another output path"
                )
        check_output_writable(self.path)  # the muxer opens the file lazily, at the first packet
        if (self.out_width, self.out_height) != (self.width, self.height):
            logger.warning(
                "output %s: %dx%d has an odd side; encoded as %dx%d (H.264 yuv420p needs even sizes; "
                "the last column/row is repeated)",
                self.path, self.width, self.height, self.out_width, self.out_height,
            )

        self._audio = self._prepare_audio(audio)
        self._audio_pos = 0
        self._n_frames = 0
        self._closed = False
        self.tmp_path = folder / f".{self.path.stem}.{uuid.uuid4().hex[:12]}.tmp{self.path.suffix}"

        options = {"movflags": "+faststart"} if (faststart and fmt in ("mp4", "mov")) else {}
        try:
            self._container = av.open(str(self.tmp_path), mode="w", format=fmt, options=options)
        except Exception as exc:
            self._remove_tmp()
            raise InvalidInputError(
                f"output {str(self.path)!r} cannot be created: {_describe(exc)}"
            ) from None
        try:
            vs = self._container.add_stream("libx264", rate=self.fps)
            vs.width, vs.height = self.out_width, self.out_height
            vs.pix_fmt = "yuv420p"
            vs.codec_context.time_base = Fraction(1, 1) / self.fps
            vs.codec_context.colorspace = _ENCODE_TAG
            vs.codec_context.color_primaries = _ENCODE_TAG
            vs.codec_context.color_trc = _ENCODE_TAG
            vs.codec_context.color_range = _ENCODE_RANGE_MPEG
            vs.options = {"crf": str(self.crf), "preset": str(preset)}
            self._vstream = vs
            self._astream = None
            if self._audio is not None:
                a = self._container.add_stream("aac", rate=self.sample_rate)
                a.layout = "mono" if self._audio.shape[0] == 1 else "stereo"
                a.format = "fltp"
                a.bit_rate = 96000 if self._audio.shape[0] == 1 else 160000
                self._astream = a
        except Exception as exc:
            self._abort_quietly()
            raise InvalidInputError(
                f"output {str(self.path)!r}: cannot set up the H.264/AAC encoders: {_describe(exc)}"
            ) from None

    # -- audio ---------------------------------------------------------------------------------
    def _prepare_audio(self, audio) -> np.ndarray | None:
        if audio is None:
            return None
        if self.sample_rate <= 0:
            raise InvalidInputError(f"VideoWriter: sample_rate must be > 0 Hz, got {self.sample_rate}")
        a = np.asarray(audio, dtype=np.float32)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[0] not in (1, 2):
            raise InvalidInputError(
                f"VideoWriter: audio must be float [T] or [C, T] with C in (1, 2), got shape {a.shape}"
            )
        if a.shape[1] == 0:
            return None
        if not np.all(np.isfinite(a)):
            raise InvalidInputError("VideoWriter: audio contains NaN or infinite samples")
        return np.ascontiguousarray(np.clip(a, -1.0, 1.0))

    def _write_audio_until(self, t_seconds: float | None) -> None:
        """Encode audio samples up to time ``t_seconds`` (None = all remaining)."""
        if self._astream is None:
            return
        total = self._audio.shape[1]
        end = total if t_seconds is None else min(total, int(t_seconds * self.sample_rate))
        layout = "mono" if self._audio.shape[0] == 1 else "stereo"
        while self._audio_pos < end:
            n = min(1024, end - self._audio_pos)  # 1024 = AAC frame size
            if n < 1024 and t_seconds is not None:
                break  # a partial block waits for more video (or for close())
            block = self._audio[:, self._audio_pos : self._audio_pos + n]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
            frame.sample_rate = self.sample_rate
            frame.pts = self._audio_pos
            frame.time_base = Fraction(1, self.sample_rate)
            for pkt in self._astream.encode(frame):
                self._container.mux(pkt)
            self._audio_pos += n

    # -- video ---------------------------------------------------------------------------------
    def write(self, frames) -> None:
        """Append frames.

        Args:
            frames: uint8 ``[n, H, W, 3]`` (or one ``[H, W, 3]`` frame) RGB 0..255, with the
                ``width``/``height`` given to the constructor; numpy array or CPU tensor.

        Raises:
            InvalidInputError: wrong shape or dtype, writer already closed, encoder failure.
        """
        if self._closed:
            raise InvalidInputError(f"VideoWriter for {str(self.path)!r} is already closed")
        arr = np.asarray(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (self.height, self.width, 3):
            raise InvalidInputError(
                f"VideoWriter.write: expected frames [n, {self.height}, {self.width}, 3], "
                f"got shape {tuple(arr.shape)}"
            )
        if arr.dtype != np.uint8:
            raise InvalidInputError(f"VideoWriter.write: expected uint8 frames, got {arr.dtype}")
        pad_w, pad_h = self.out_width - self.width, self.out_height - self.height
        try:
            for img in arr:
                if pad_w or pad_h:
                    img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                vf = vf.reformat(
                    format="yuv420p",
                    dst_colorspace=_ENCODE_COLORSPACE,
                    dst_color_range="MPEG",
                )
                vf.pts = self._n_frames
                vf.time_base = self._vstream.codec_context.time_base
                for pkt in self._vstream.encode(vf):
                    self._container.mux(pkt)
                self._n_frames += 1
            self._write_audio_until(self._n_frames / float(self.fps))
        except InvalidInputError:
            raise
        except Exception as exc:
            self._abort_quietly()
            raise InvalidInputError(
                f"output {str(self.path)!r}: encoding failed at frame {self._n_frames}: {_describe(exc)}"
            ) from None

    @property
    def num_frames(self) -> int:
        """Frames written so far."""
        return self._n_frames

    # -- finish ----------------------------------------------------------------------------------
    def close(self) -> Path:
        """Flush the encoders, finish the file and move it to ``path``. Returns ``path``.

        Raises:
            InvalidInputError: no frame was written, or the encoder/muxer failed (temp removed).
        """
        if self._closed:
            return self.path
        if self._n_frames == 0:
            self._abort_quietly()
            raise InvalidInputError(f"output {str(self.path)!r}: no frames were written")
        try:
            for pkt in self._vstream.encode(None):
                self._container.mux(pkt)
            if self._astream is not None:
                self._write_audio_until(None)
                for pkt in self._astream.encode(None):
                    self._container.mux(pkt)
            self._container.close()
            self._closed = True
            os.replace(self.tmp_path, self.path)
        except Exception as exc:
            self._abort_quietly()
            raise InvalidInputError(
                f"output {str(self.path)!r} could not be finished: {_describe(exc)}"
            ) from None
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; ``path`` is left untouched."""
        self._abort_quietly()

    def _abort_quietly(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            try:
                self._container.close()
            except Exception:
                pass
        self._closed = True
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            self.tmp_path.unlink()
        except (FileNotFoundError, AttributeError):
            pass
        except OSError:
            pass

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort_quietly()

    def __del__(self):  # an unfinished writer never leaves its temporary file behind
        try:
            if not self._closed:
                self._abort_quietly()
        except Exception:
            pass
