"""Frame timing and video/audio length reconciliation (pure numpy; spec 1.4 step 7, 1.6, 1.12).

The official pipeline always works at 25 fps (it re-encodes the input first, spec 1.5). Here the
source fps is kept, so every rule is written for any fps and reduces to the official one at 25:

* output length = number of audio windows: ``n = min{i : int(i * (50 / fps)) > L} + 1`` with
  ``L`` Whisper encoder steps (50 per second), i.e. ``floor(L / 2) + 2`` at 25 fps (spec 1.4.7);
* a video shorter than that is looped ping-pong (forward, reversed, forward, ...; spec 1.6);
* the audio written next to ``n`` frames is cut to ``int(n / fps * sample_rate)`` samples (1.12).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from latentsync.audio.windows import num_audio_frames
from latentsync.errors import InvalidInputError

__all__ = [
    "WHISPER_SAMPLE_RATE",
    "WHISPER_STEPS_PER_SECOND",
    "fps_to_fraction",
    "frame_timestamps",
    "loop_indices",
    "num_whisper_steps",
    "num_output_frames",
    "audio_samples_for_frames",
    "OutputPlan",
    "plan_output",
]

WHISPER_SAMPLE_RATE = 16000
"""Sample rate (Hz) of the waveform fed to Whisper."""

WHISPER_STEPS_PER_SECOND = 50
"""Whisper encoder time steps per second (mel hop 160 at 16 kHz, then stride-2 conv)."""

_MEL_HOP = 160
_WINDOW_MEL_FRAMES = 3000  # one 30 s encoder window


def fps_to_fraction(fps: float | Fraction | int) -> Fraction:
    """Exact frame rate as a Fraction: NTSC rates map to ``N*1000/1001`` (29.97 -> 30000/1001).

    Integer rates stay integers (25.0 -> 25); other floats are approximated with a denominator
    <= 1001 (12.5 -> 25/2).

    Raises:
        InvalidInputError: fps not a finite number > 0.
    """
    if isinstance(fps, Fraction):
        if fps <= 0:
            raise InvalidInputError(f"fps must be > 0, got {fps}")
        return fps
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise InvalidInputError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(f) or f <= 0:
        raise InvalidInputError(f"fps must be a finite number > 0, got {fps!r}")
    if abs(f - round(f)) < 1e-9:
        return Fraction(int(round(f)))
    ntsc = f * 1.001
    if round(ntsc) > 0 and abs(ntsc - round(ntsc)) < 2e-3:
        return Fraction(int(round(ntsc)) * 1000, 1001)
    return Fraction(f).limit_denominator(1001)


def _check_count(name: str, value, minimum: int = 0) -> int:
    try:
        iv = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}") from None
    if iv != value or iv < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return iv


def frame_timestamps(n: int, fps: float | Fraction) -> np.ndarray:
    """Start time of each frame of a constant-rate video.

    Args:
        n: number of frames, >= 0.
        fps: frames per second, > 0.

    Returns:
        float64 ``[n]`` seconds, ``t[i] = i / fps``.

    Raises:
        InvalidInputError: negative ``n`` or non-positive fps.
    """
    n = _check_count("frame_timestamps: n", n)
    fr = fps_to_fraction(fps)
    return np.arange(n, dtype=np.float64) * (fr.denominator / fr.numerator)


def loop_indices(n_video: int, n_target: int) -> np.ndarray:
    """Source frame index for each output frame: the official ping-pong loop (spec 1.6).

    If ``n_target <= n_video`` the video is cut: ``arange(n_target)``. Otherwise
    ``ceil(n_target / n_video)`` copies are concatenated, odd copies reversed
    (``0..n-1, n-1..0, 0..n-1, ...``; the turning frame appears twice, as in the official code),
    and the result is truncated to ``n_target``.

    Args:
        n_video: frames available, >= 1.
        n_target: frames wanted, >= 0.

    Returns:
        int64 ``[n_target]`` with values in ``[0, n_video)``.

    Raises:
        InvalidInputError: ``n_video < 1`` or ``n_target < 0``.
    """
    n_video = _check_count("loop_indices: n_video", n_video, minimum=1)
    n_target = _check_count("loop_indices: n_target", n_target)
    if n_target <= n_video:
        return np.arange(n_target, dtype=np.int64)
    copies = -(-n_target // n_video)
    forward = np.arange(n_video, dtype=np.int64)
    parts = [forward if c % 2 == 0 else forward[::-1] for c in range(copies)]
    return np.concatenate(parts)[:n_target]


def num_whisper_steps(num_samples_16k: int) -> int:
    """Whisper encoder steps ``L`` for a 16 kHz waveform of ``num_samples_16k`` samples (spec 1.4.2-5).

    ``N // 160`` mel frames, cut into 3000-frame windows, ``floor(frames / 2)`` steps kept per
    window; because 3000 is even this equals ``(N // 160) // 2``.
    """
    n = _check_count("num_whisper_steps: num_samples_16k", num_samples_16k)
    n_mel = n // _MEL_HOP
    full, rest = divmod(n_mel, _WINDOW_MEL_FRAMES)
    return full * (_WINDOW_MEL_FRAMES // 2) + rest // 2


def num_output_frames(
    num_audio_samples: int, fps: float | Fraction, sample_rate: int = WHISPER_SAMPLE_RATE
) -> int:
    """Output frame count for an audio clip: one frame per audio window (spec 1.4.7, 1.6).

    Args:
        num_audio_samples: length of the waveform, samples at ``sample_rate``.
        fps: output (= source) frame rate, > 0.
        sample_rate: rate of ``num_audio_samples`` in Hz; converted to the 16 kHz count Whisper sees.

    Returns:
        ``num_audio_frames(num_whisper_steps(N_16k), fps)``; at 25 fps ``floor(N/320) // 2 + 2``,
        e.g. 153 600 samples (9.6 s) -> 242 frames.

    Raises:
        AudioTooShortError: fewer than 320 samples at 16 kHz (no Whisper step).
    """
    n = _check_count("num_output_frames: num_audio_samples", num_audio_samples)
    sr = _check_count("num_output_frames: sample_rate", sample_rate, minimum=1)
    n16 = n if sr == WHISPER_SAMPLE_RATE else (n * WHISPER_SAMPLE_RATE) // sr
    return num_audio_frames(num_whisper_steps(n16), fps)


def audio_samples_for_frames(
    num_frames: int, fps: float | Fraction, sample_rate: int = WHISPER_SAMPLE_RATE
) -> int:
    """Audio samples spanning ``num_frames`` frames, ``floor(num_frames / fps * sample_rate)`` (1.12).

    Computed with the exact fps Fraction (the official code uses ``int(n / 25 * 16000)``).
    """
    n = _check_count("audio_samples_for_frames: num_frames", num_frames)
    sr = _check_count("audio_samples_for_frames: sample_rate", sample_rate, minimum=1)
    fr = fps_to_fraction(fps)
    return int(Fraction(n * sr) / fr)


@dataclass(frozen=True)
class OutputPlan:
    """How a video and an audio clip are reconciled (spec 1.6).

    Attributes:
        num_frames: output frames (= audio windows).
        frame_indices: int64 ``[num_frames]``, source frame for each output frame.
        looped: True when the video is shorter than the audio and is played ping-pong.
        num_audio_samples: samples of the output audio track, ``min(audio length, frames span)``
            (the official cut ``int(n / fps * sr)``; never longer than the audio given).
        fps: the frame rate used.
    """

    num_frames: int
    frame_indices: np.ndarray
    looped: bool
    num_audio_samples: int
    fps: float


def plan_output(
    num_video_frames: int,
    num_audio_samples: int,
    fps: float | Fraction,
    sample_rate: int = WHISPER_SAMPLE_RATE,
) -> OutputPlan:
    """Plan the output timeline from the video length, the audio length and the fps.

    Args:
        num_video_frames: decodable source frames, >= 1.
        num_audio_samples: audio samples at ``sample_rate``, >= 0.
        fps: frame rate of the source and the output.
        sample_rate: Hz of ``num_audio_samples``.

    Returns:
        :class:`OutputPlan`.
    """
    n_out = num_output_frames(num_audio_samples, fps, sample_rate)
    idx = loop_indices(num_video_frames, n_out)
    n_audio = min(int(num_audio_samples), audio_samples_for_frames(n_out, fps, sample_rate))
    return OutputPlan(
        num_frames=n_out,
        frame_indices=idx,
        looped=n_out > int(num_video_frames),
        num_audio_samples=n_audio,
        fps=float(fps_to_fraction(fps)),
    )
