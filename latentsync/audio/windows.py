"""Per-video-frame windows of Whisper features for any fps (spec 1.4 steps 6-7).

Whisper features come at 50 steps per second (:func:`latentsync.audio.whisper.extract_whisper_features`).
Video frame ``i`` (timestamp ``i / fps`` seconds) is conditioned on the 10 steps around its centre
``c = int(i * 50 / fps)``: steps ``c - 4 ... c + 5`` (80 ms before to 120 ms after the frame start;
``audio_feat_length = [2, 2]``), each clamped to ``[0, L - 1]``, flattened time-major / layer-minor
into ``(10 * 5, 384) = (50, 384)`` tokens (token ``k = 5 * offset + layer``).

The official loop emits windows for ``i = 0, 1, ...`` and stops after the first ``i`` with
``int(i * (50 / fps)) > L``, so at 25 fps it yields ``floor(L / 2) + 2`` windows, ~2 more than the
audio has frames (the tail uses clamped features). :func:`num_audio_frames` applies the same rule
to any fps.
"""

from __future__ import annotations

import math

import torch

from latentsync.audio.whisper import DEFAULT_WINDOW_BATCH, ENCODER_STEPS_PER_SECOND, SAMPLE_RATE, extract_whisper_features
from latentsync.audio.mel import as_waveform
from latentsync.errors import AudioTooShortError, InvalidInputError
from latentsync.types import AudioEmbeds

AUDIO_FEAT_LENGTH = (2, 2)  # official audio_feat_length: context before / after, in pairs of steps
WINDOW_OFFSETS = tuple(range(-AUDIO_FEAT_LENGTH[0] * 2, (AUDIO_FEAT_LENGTH[1] + 1) * 2))  # -4 .. 5
WINDOW_STEPS = len(WINDOW_OFFSETS)  # 10


def _check_fps(fps) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise InvalidInputError(f"fps: expected a positive frame rate in Hz, got {fps!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise InvalidInputError(f"fps: expected a positive, finite frame rate in Hz, got {fps!r}")
    return value


def _check_num_features(num_features) -> int:
    if int(num_features) != num_features or num_features < 1:
        raise AudioTooShortError(
            f"Whisper features: expected at least 1 encoder step (20 ms of audio), got {num_features}"
        )
    return int(num_features)


def frame_centres(num_frames: int, fps: float, start_frame: int = 0) -> torch.Tensor:
    """Encoder step at each video frame's timestamp: ``int(i * 50 / fps)`` for
    ``start_frame <= i < start_frame + num_frames``.

    Computed in float64 exactly as the official ``int(vid_idx * 50 / fps)`` (exact integer numerator,
    one correctly rounded division), so the indices match it bit for bit.

    Returns:
        int64 ``[num_frames]`` (CPU), non-decreasing.
    """
    fps = _check_fps(fps)
    if num_frames < 0 or start_frame < 0:
        raise InvalidInputError(f"num_frames, start_frame: expected >= 0, got {num_frames}, {start_frame}")
    index = torch.arange(int(start_frame), int(start_frame) + int(num_frames), dtype=torch.float64)
    return torch.floor(index * ENCODER_STEPS_PER_SECOND / fps).to(torch.int64)


def num_audio_frames(num_features: int, fps: float) -> int:
    """Number of per-frame audio windows for ``num_features`` Whisper steps (spec 1.4 step 7).

    The official rule, generalised to any fps: windows are made for ``i = 0, 1, ...`` until (and
    including) the first ``i`` with ``int(i * (50 / fps)) > num_features``. At 25 fps this is
    ``floor(L / 2) + 2``; e.g. 9.6 s of audio -> L = 480 -> 242 frames; 3.2 s -> 160 -> 82.

    Args:
        num_features: L, the number of Whisper steps (>= 1).
        fps: video frame rate (Hz), > 0.

    Returns:
        int, the number of video frames the audio drives.

    Raises:
        AudioTooShortError: ``num_features < 1``. InvalidInputError: bad fps.
    """
    length = _check_num_features(num_features)
    fps = _check_fps(fps)
    multiplier = ENCODER_STEPS_PER_SECOND / fps  # official: whisper_idx_multiplier = 50. / fps

    def past_end(i: int) -> bool:
        return int(i * multiplier) > length

    i = max(0, int((length + 1) / multiplier) - 2)  # just below the stopping index
    while i > 0 and past_end(i - 1):
        i -= 1
    while not past_end(i):
        i += 1
    return i + 1


def window_indices(num_frames: int, fps: float, num_features: int, start_frame: int = 0) -> torch.Tensor:
    """Source Whisper steps of every frame's window: ``clamp(c_i + [-4..5], 0, L - 1)``.

    Returns:
        int64 ``[num_frames, 10]`` (CPU); row ``r`` equals the official ``selected_idx`` of frame
        ``start_frame + r``.
    """
    length = _check_num_features(num_features)
    centres = frame_centres(num_frames, fps, start_frame)
    offsets = torch.tensor(WINDOW_OFFSETS, dtype=torch.int64)
    return (centres[:, None] + offsets[None, :]).clamp_(0, length - 1)


def audio_windows(
    features: torch.Tensor, fps: float, num_frames: int | None = None, start_frame: int = 0
) -> torch.Tensor:
    """Cut Whisper features into one 10-step window per video frame (spec 1.4 step 6).

    Args:
        features: ``[L, S, D]`` Whisper steps at 50 Hz (``[L, 5, 384]`` for tiny) from
            :func:`latentsync.audio.whisper.extract_whisper_features`.
        fps: video frame rate (Hz); any positive value (25, 30, 29.97, 24, ...).
        num_frames: number of windows to return; default :func:`num_audio_frames` ``(L, fps)``
            (the official count). Pass the video's frame count to cut or extend to it: frames past
            the audio repeat the clamped last steps.
        start_frame: first frame to cut (for streaming a long clip chunk by chunk); with
            ``num_frames=None`` the windows run from ``start_frame`` to the official count.

    Returns:
        ``[F, 10 * S, D]`` (``[F, 50, 384]``), same dtype/device as ``features``; row ``r`` (frame
        ``i = start_frame + r``) is steps ``c_i - 4 ... c_i + 5`` (clamped), time-major, layer-minor.

    Raises:
        AudioTooShortError: ``L == 0``. InvalidInputError: wrong rank, bad fps or num_frames.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 3:
        raise InvalidInputError(
            f"features: expected Whisper features of shape [L, 5, 384], got {getattr(features, 'shape', type(features))}"
        )
    length = _check_num_features(features.shape[0])
    if int(start_frame) != start_frame or start_frame < 0:
        raise InvalidInputError(f"start_frame: expected a non-negative integer, got {start_frame!r}")
    if num_frames is None:
        num_frames = max(0, num_audio_frames(length, fps) - int(start_frame))
    elif int(num_frames) != num_frames or num_frames < 0:
        raise InvalidInputError(f"num_frames: expected a non-negative integer, got {num_frames!r}")
    index = window_indices(int(num_frames), fps, length, int(start_frame)).to(features.device)  # [F, 10]
    steps, layers, dim = features.shape
    return features[index.reshape(-1)].reshape(int(num_frames), WINDOW_STEPS * layers, dim)


def compute_audio_embeds(
    model,
    waveform_16k,
    fps: float,
    num_frames: int | None = None,
    batch_size: int = DEFAULT_WINDOW_BATCH,
    dtype: torch.dtype | None = None,
) -> AudioEmbeds:
    """Whisper features of a waveform cut into per-frame windows (spec 1.4): the U-Net's audio_embeds.

    Args:
        model: openai-whisper ``Whisper`` (``latentsync.checkpoints.load_whisper``) or its encoder.
        waveform_16k: mono float32 samples ``[T]`` at 16 kHz (numpy or torch), about -1..1.
        fps: video frame rate (Hz) the windows are cut for.
        num_frames: exact number of windows (e.g. the video's frame count); default the official
            count :func:`num_audio_frames`.
        batch_size, dtype: see :func:`latentsync.audio.whisper.extract_whisper_features`.

    Returns:
        :class:`latentsync.types.AudioEmbeds` with ``embeds`` float32 ``[F, 50, 384]`` on the model's
        device and ``fps``.

    Raises:
        AudioTooShortError: the audio is empty or shorter than one video frame (``1 / fps`` s).
        InvalidInputError: bad fps, waveform or model.
    """
    fps = _check_fps(fps)
    audio = as_waveform(waveform_16k)
    duration = audio.shape[0] / SAMPLE_RATE
    if audio.shape[0] == 0 or audio.shape[0] * fps < SAMPLE_RATE:
        raise AudioTooShortError(
            f"waveform_16k: the audio lasts {duration:.4f} s ({audio.shape[0]} samples at 16 kHz), shorter than one "
            f"video frame at {fps:g} fps ({1.0 / fps:.4f} s); give at least {math.ceil(SAMPLE_RATE / fps)} samples"
        )
    features = extract_whisper_features(model, audio, batch_size=batch_size, dtype=dtype)
    return AudioEmbeds(embeds=audio_windows(features, fps, num_frames), fps=fps)
