"""Per-frame Whisper windows (spec 1.4 steps 6-7): parity with the official windowing, any fps, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latentsync.audio.whisper import extract_whisper_features
from latentsync.audio.windows import (
    audio_windows,
    compute_audio_embeds,
    frame_centres,
    num_audio_frames,
    window_indices,
)
from latentsync.errors import AudioTooShortError, InvalidInputError, LatentSyncError
from latentsync.types import AudioEmbeds

from conftest import parity_file


def official_rule(num_features: int, fps: float) -> list[list[int]]:
    """The official loop written out plainly: one row of clamped indices per frame, stop rule included."""
    multiplier = 50.0 / fps
    rows = []
    i = 0
    while True:
        start = int(i * multiplier)
        centre = int(i * 50 / fps)
        rows.append([min(max(centre + k, 0), num_features - 1) for k in range(-4, 6)])
        i += 1
        if start > num_features:
            break
    return rows


# --- parity with the official feature2chunks at 25 fps ------------------------------------------


def test_windows_match_official_chunks_exactly():
    ref = load_file(str(parity_file("audio_windows.safetensors")))
    features = ref["feature_array"]  # [160, 5, 384]
    chunks = audio_windows(features, 25)
    assert chunks.shape == ref["chunks"].shape == (82, 50, 384)
    assert torch.equal(chunks, ref["chunks"])
    assert torch.equal(window_indices(82, 25, features.shape[0]), ref["selected_idx"])
    assert num_audio_frames(features.shape[0], 25) == 82


def test_token_layout_is_time_major_layer_minor():
    steps, layers, dim = 40, 5, 3
    features = torch.arange(steps * layers * dim, dtype=torch.float32).reshape(steps, layers, dim)
    chunks = audio_windows(features, 25)
    frame = 7  # centre 14 -> steps 10..19
    for offset in range(10):
        for layer in range(layers):
            assert torch.equal(chunks[frame, 5 * offset + layer], features[14 - 4 + offset, layer])


# --- counts and centres for any fps --------------------------------------------------------------


@pytest.mark.parametrize("length, expected", [(160, 82), (161, 82), (480, 242), (1, 2), (2, 3), (3, 3)])
def test_count_at_25fps_is_floor_half_plus_two(length, expected):
    assert num_audio_frames(length, 25) == expected == length // 2 + 2


@pytest.mark.parametrize("fps", [25, 30, 29.97, 24, 23.976, 60, 12.5, 50])
@pytest.mark.parametrize("length", [1, 2, 7, 149, 150, 151, 500, 1550])
def test_count_and_indices_follow_the_official_rule(fps, length):
    rows = official_rule(length, fps)
    assert num_audio_frames(length, fps) == len(rows)
    assert window_indices(len(rows), fps, length).tolist() == rows


@pytest.mark.parametrize(
    "fps, frame, seconds",
    [(30, 3, 0.1), (30, 30, 1.0), (30, 45, 1.5), (24, 12, 0.5), (24, 24, 1.0), (29.97, 2997, 100.0), (25, 250, 10.0)],
)
def test_centres_follow_frame_timestamps(fps, frame, seconds):
    assert frame / fps == pytest.approx(seconds)
    assert int(frame_centres(frame + 1, fps)[frame]) == round(seconds * 50)


@pytest.mark.parametrize("fps", [30, 29.97, 24])
def test_centres_are_timestamp_times_50(fps):
    centres = frame_centres(1000, fps).numpy()
    timestamps = np.arange(1000) / fps
    assert np.all(centres == np.floor(timestamps * 50 + 1e-9))
    assert np.all(np.diff(centres) >= 1)  # at most 50 fps: one new step per frame at least


def test_counts_for_3_seconds():
    # 3 s of audio -> L = 150 steps; the output is two frames longer than the audio at any fps
    assert num_audio_frames(150, 30) == 92  # 90 frames + 2
    assert num_audio_frames(150, 24) == 74  # 72 frames + 2
    assert num_audio_frames(150, 29.97) == official_len(150, 29.97)


def official_len(length, fps):
    return len(official_rule(length, fps))


def test_num_frames_cuts_and_extends_with_clamping():
    features = torch.randn(160, 5, 8)
    full = audio_windows(features, 25)
    cut = audio_windows(features, 25, num_frames=80)
    assert cut.shape == (80, 50, 8) and torch.equal(cut, full[:80])
    longer = audio_windows(features, 25, num_frames=100)
    assert longer.shape[0] == 100 and torch.equal(longer[:82], full)
    assert torch.equal(longer[99], features[159].repeat(10, 1))  # past the end: last step repeated
    assert audio_windows(features, 25, num_frames=0).shape == (0, 50, 8)


def test_start_frame_streams_the_same_windows():
    features = torch.randn(160, 5, 8)
    full = audio_windows(features, 29.97)
    parts = [audio_windows(features, 29.97, num_frames=16, start_frame=s) for s in range(0, len(full), 16)]
    assert torch.equal(torch.cat(parts)[: len(full)], full)
    assert torch.equal(audio_windows(features, 29.97, start_frame=50), full[50:])
    assert audio_windows(features, 29.97, start_frame=len(full) + 5).shape[0] == 0
    with pytest.raises(InvalidInputError, match="start_frame"):
        audio_windows(features, 25, start_frame=-1)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [0, -25, float("nan"), float("inf"), "abc"])
def test_bad_fps_raises(fps):
    with pytest.raises(InvalidInputError, match="fps"):
        num_audio_frames(100, fps)


def test_bad_features_raise():
    with pytest.raises(AudioTooShortError):
        audio_windows(torch.zeros(0, 5, 384), 25)
    with pytest.raises(InvalidInputError, match=r"\[L, 5, 384\]"):
        audio_windows(torch.zeros(10, 384), 25)
    with pytest.raises(InvalidInputError, match="num_frames"):
        audio_windows(torch.zeros(10, 5, 384), 25, num_frames=-1)


# --- end to end with a small random Whisper -----------------------------------------------------


@pytest.fixture(scope="module")
def small_whisper():
    whisper_model = pytest.importorskip("whisper.model")
    torch.manual_seed(0)
    dims = whisper_model.ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
        n_vocab=64, n_text_ctx=8, n_text_state=32, n_text_head=2, n_text_layer=1,
    )
    return whisper_model.Whisper(dims).eval()


def test_compute_audio_embeds_end_to_end(small_whisper):
    waveform = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)  # 1 s
    features = extract_whisper_features(small_whisper, waveform)
    assert features.shape == (50, 3, 32) and features.dtype == torch.float32
    embeds = compute_audio_embeds(small_whisper, waveform, fps=25)
    assert isinstance(embeds, AudioEmbeds) and embeds.fps == 25.0
    assert embeds.embeds.shape == (27, 30, 32) and len(embeds) == 27
    assert torch.equal(embeds.embeds, audio_windows(features, 25))
    # the encoder itself is accepted too; a fixed frame count; another fps
    assert torch.equal(compute_audio_embeds(small_whisper.encoder, waveform, 25, num_frames=25).embeds, embeds.embeds[:25])
    at30 = compute_audio_embeds(small_whisper, torch.from_numpy(waveform), 30)
    assert len(at30) == num_audio_frames(50, 30) == 32


def test_window_batching_does_not_change_features(small_whisper):
    waveform = 0.1 * torch.randn(16000 * 31 + 100, generator=torch.Generator().manual_seed(1))  # 2 windows
    one = extract_whisper_features(small_whisper, waveform, batch_size=1)
    assert one.shape == (3100 // 2, 3, 32)
    for batch_size in (2, 8):
        assert (extract_whisper_features(small_whisper, waveform, batch_size=batch_size) - one).abs().max() <= 1e-5
    with pytest.raises(InvalidInputError, match="batch_size"):
        extract_whisper_features(small_whisper, waveform, batch_size=0)


def test_compute_audio_embeds_rejects_short_or_bad_audio(small_whisper):
    with pytest.raises(AudioTooShortError, match="0.0000 s.*25 fps"):
        compute_audio_embeds(small_whisper, np.zeros(0, np.float32), 25)
    with pytest.raises(AudioTooShortError, match=r"0\.0300 s.*25 fps"):
        compute_audio_embeds(small_whisper, np.zeros(480, np.float32), 25)  # 30 ms < 40 ms
    with pytest.raises(InvalidInputError, match=r"shape \(2, 16000\)"):
        compute_audio_embeds(small_whisper, np.zeros((2, 16000), np.float32), 25)
    bad = np.zeros(16000, np.float32)
    bad[5] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        compute_audio_embeds(small_whisper, bad, 25)
    with pytest.raises(InvalidInputError, match="Whisper"):
        compute_audio_embeds(torch.nn.Linear(2, 2), np.zeros(16000, np.float32), 25)
    assert issubclass(AudioTooShortError, LatentSyncError)


def test_one_frame_of_audio_is_enough(small_whisper):
    embeds = compute_audio_embeds(small_whisper, np.zeros(640, np.float32), 25)  # exactly 40 ms
    assert len(embeds) == num_audio_frames(2, 25) == 3
    assert math.isfinite(float(embeds.embeds.abs().max()))
