"""Tests for latentsync.video.timeline (pure numpy; spec 1.4.7, 1.6, 1.12)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from latentsync.errors import AudioTooShortError, InvalidInputError
from latentsync.video.timeline import (
    audio_samples_for_frames,
    fps_to_fraction,
    frame_timestamps,
    loop_indices,
    num_audio_frames,
    num_output_frames,
    num_whisper_steps,
    plan_output,
)


def literal_window_count(L: int, fps: float) -> int:
    """The official loop, written out: frames i = 0, 1, ... until int(i * (50 / fps)) passes L."""
    multiplier = 50.0 / fps
    i = 0
    while int(i * multiplier) <= L:
        i += 1
    return i + 1


@pytest.mark.parametrize("fps", [25, 30])
def test_frame_timestamps(fps):
    t = frame_timestamps(4, fps)
    assert t.dtype == np.float64
    np.testing.assert_allclose(t, np.arange(4) / fps)
    assert frame_timestamps(0, fps).shape == (0,)


def test_frame_timestamps_ntsc_exact():
    t = frame_timestamps(30001, 29.97)
    assert t[30000] == pytest.approx(1001.0, abs=1e-9)  # 30000 frames at 30000/1001 fps


def test_fps_to_fraction():
    assert fps_to_fraction(25) == 25
    assert fps_to_fraction(25.0) == Fraction(25)
    assert fps_to_fraction(29.97) == Fraction(30000, 1001)
    assert fps_to_fraction(30000 / 1001) == Fraction(30000, 1001)
    assert fps_to_fraction(23.976) == Fraction(24000, 1001)
    assert fps_to_fraction(59.94) == Fraction(60000, 1001)
    assert fps_to_fraction(12.5) == Fraction(25, 2)
    for bad in (0, -25, float("nan"), float("inf"), "x"):
        with pytest.raises(InvalidInputError):
            fps_to_fraction(bad)


def test_loop_indices_truncate_when_video_is_long():
    np.testing.assert_array_equal(loop_indices(10, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(loop_indices(5, 5), np.arange(5))
    assert loop_indices(5, 0).shape == (0,)
    assert loop_indices(5, 3).dtype == np.int64


def test_loop_indices_ping_pong_once():
    # 4 frames, 6 wanted: forward copy, then the reversed copy (turning frame repeated), truncated
    np.testing.assert_array_equal(loop_indices(4, 6), [0, 1, 2, 3, 3, 2])


def test_loop_indices_multiple_loops():
    got = loop_indices(3, 13)
    expected = [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
    np.testing.assert_array_equal(got, expected)
    big = loop_indices(7, 100)
    assert big.shape == (100,) and big.min() == 0 and big.max() == 6
    # each copy of 7 alternates direction
    blocks = big[:98].reshape(14, 7)
    for k, b in enumerate(blocks):
        np.testing.assert_array_equal(b, np.arange(7) if k % 2 == 0 else np.arange(7)[::-1])


def test_loop_indices_single_frame_video():
    np.testing.assert_array_equal(loop_indices(1, 5), [0, 0, 0, 0, 0])


def test_loop_indices_errors():
    with pytest.raises(InvalidInputError):
        loop_indices(0, 5)
    with pytest.raises(InvalidInputError):
        loop_indices(5, -1)
    with pytest.raises(InvalidInputError):
        loop_indices(2.5, 3)


def test_num_whisper_steps():
    assert num_whisper_steps(153600) == 480  # 9.6 s, spec example
    assert num_whisper_steps(319) == 0
    assert num_whisper_steps(320) == 1
    # across a 30 s window boundary: 3000 mel frames -> 1500 steps per full window
    assert num_whisper_steps(30 * 16000 + 320 * 7) == 1500 + 7


def test_output_frames_official_examples_at_25fps():
    # spec 1.4.7 / media README: demo1..3 audio -> 242, 498, 466 frames
    assert num_output_frames(153600, 25) == 242
    assert num_output_frames(317440, 25) == 498
    assert num_output_frames(296960, 25) == 466
    for L in range(1, 300):
        assert num_audio_frames(L, 25) == L // 2 + 2


def test_too_short_audio_raises():
    with pytest.raises(AudioTooShortError):
        num_audio_frames(0, 25)
    with pytest.raises(AudioTooShortError):
        num_output_frames(319, 25)  # under 20 ms: no Whisper step


@pytest.mark.parametrize("fps", [25, 30, 29.97, 30000 / 1001, 24, 23.976, 24000 / 1001, 50, 60, 12.5])
def test_window_count_equals_literal_loop(fps):
    for L in range(1, 1200):
        assert num_audio_frames(L, fps) == literal_window_count(L, fps), (L, fps)


def test_window_count_30fps_values():
    # 30 fps: centre int(i * 5 / 3); 1 s of audio (L = 50) -> first i with int(5i/3) > 50 is 31
    assert num_audio_frames(50, 30) == 32
    assert num_output_frames(16000, 30) == 32


def test_output_frames_other_sample_rate():
    assert num_output_frames(44100 * 2, 25, sample_rate=44100) == num_output_frames(32000, 25)


def test_audio_samples_for_frames():
    assert audio_samples_for_frames(242, 25) == int(242 / 25 * 16000)
    assert audio_samples_for_frames(30, 30) == 16000
    assert audio_samples_for_frames(30, 29.97) == 16016  # 30 frames = 1.001 s


@pytest.mark.parametrize("fps", [25, 30])
def test_plan_output(fps):
    # audio longer than the video -> looped; audio cut to the frames' span but never extended
    plan = plan_output(num_video_frames=10, num_audio_samples=16000, fps=fps)
    assert plan.num_frames == num_output_frames(16000, fps)
    assert plan.looped and plan.frame_indices.shape == (plan.num_frames,)
    np.testing.assert_array_equal(plan.frame_indices[:12], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8])
    assert plan.num_audio_samples == 16000  # frames span > 1 s, audio is not padded
    short = plan_output(num_video_frames=1000, num_audio_samples=8000, fps=fps)
    assert not short.looped
    np.testing.assert_array_equal(short.frame_indices, np.arange(short.num_frames))
