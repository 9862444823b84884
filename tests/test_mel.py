"""SyncNet mel (spec 3.1) and the Slaney filterbank, checked against librosa/scipy when installed."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from latentsync.audio.mel import (
    crop_mel_window,
    hz_to_mel_slaney,
    mel_to_hz_slaney,
    mel_window_length,
    mel_window_start,
    slaney_mel_filterbank,
    stft_magnitude_centered,
    syncnet_mel_spectrogram,
)
from latentsync.errors import AudioTooShortError, InvalidInputError

pytestmark = pytest.mark.filterwarnings("ignore:path is deprecated:DeprecationWarning")  # librosa 0.10 on py3.11


def _noise(seconds: float, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    n = int(round(seconds * 16000))
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


# --- filterbank -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filterbank_equals_whisper_mel_filters(n_mels):
    whisper = pytest.importorskip("whisper")
    with np.load(os.path.join(os.path.dirname(whisper.__file__), "assets", "mel_filters.npz")) as f:
        expected = f[f"mel_{n_mels}"]  # saved by openai with librosa.filters.mel(sr=16000, n_fft=400)
    ours = slaney_mel_filterbank(16000, 400, n_mels)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-9


def test_slaney_scale():
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)
    assert hz_to_mel_slaney(200.0) == pytest.approx(3.0)
    freqs = np.array([0.0, 55.0, 999.0, 1000.0, 4000.0, 7600.0])
    assert np.allclose(mel_to_hz_slaney(hz_to_mel_slaney(freqs)), freqs)


def test_filterbank_rejects_bad_range():
    with pytest.raises(InvalidInputError, match="fmax"):
        slaney_mel_filterbank(16000, 800, 80, 55, 9000)


# --- against librosa 0.10 (test-only dependency) ----------------------------------------------


def _librosa_reference(x: np.ndarray) -> np.ndarray:
    """The Wav2Lip/LatentSync formula written with librosa + scipy (what the official code calls)."""
    librosa = pytest.importorskip("librosa")
    signal = pytest.importorskip("scipy.signal")
    y = signal.lfilter([1, -0.97], [1], x)
    spectrum = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    min_level = np.exp(-100 / 20 * np.log(10))
    s = 20 * np.log10(np.maximum(min_level, np.dot(basis, np.abs(spectrum)))) - 20
    return np.clip((2 * 4.0) * ((s - -100) / 100) - 4.0, -4.0, 4.0)


def test_syncnet_filterbank_and_stft_equal_librosa():
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert np.array_equal(slaney_mel_filterbank(16000, 800, 80, 55, 7600), expected)
    y = _noise(1.37, seed=4).astype(np.float64)
    ours = stft_magnitude_centered(y, 800, 200)
    ref = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800))
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-10


@pytest.mark.parametrize("seconds", [0.05, 1.0, 3.3217])
def test_syncnet_mel_equals_librosa_reference(seconds):
    x = _noise(seconds, seed=1)
    x[: len(x) // 3] *= 1e-4  # quiet start: exercises the -100 dB floor and the clipping
    ours = syncnet_mel_spectrogram(x)
    ref = _librosa_reference(x)
    assert ours.dtype == torch.float64 and ours.shape == ref.shape == (80, 1 + len(x) // 200)
    assert np.abs(ours.numpy() - ref).max() <= 1e-9


# --- properties (no oracle needed) -------------------------------------------------------------


def test_syncnet_mel_shape_range_and_silence():
    mel = syncnet_mel_spectrogram(torch.from_numpy(_noise(2.0)))
    assert mel.shape == (80, 161) and mel.dtype == torch.float64
    assert mel.min() >= -4 and mel.max() <= 4
    silent = syncnet_mel_spectrogram(np.zeros(3200, np.float32))
    assert torch.all(silent == -4.0)


def test_syncnet_mel_tone_lands_in_the_right_band():
    t = np.arange(16000) / 16000
    mel = syncnet_mel_spectrogram((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    band = int(mel[:, 10:-10].mean(dim=1).argmax())
    basis = slaney_mel_filterbank(16000, 800, 80, 55, 7600)
    assert abs(band - int(basis[:, 50].argmax())) <= 1  # FFT bin 50 = 1000 Hz (20 Hz per bin)


def test_syncnet_mel_rejects_bad_input():
    with pytest.raises(AudioTooShortError):
        syncnet_mel_spectrogram(np.zeros(0, np.float32))
    with pytest.raises(InvalidInputError, match="shape"):
        syncnet_mel_spectrogram(np.zeros((2, 100), np.float32))


# --- windows for SyncNet clips -------------------------------------------------------------------


def test_mel_window_geometry():
    assert mel_window_length(16) == 52 and mel_window_length(25) == 80 and mel_window_length(5) == 16
    assert mel_window_start(0) == 0 and mel_window_start(7) == 22 and mel_window_start(10) == 32
    assert mel_window_length(16, fps=30) == 43


def test_crop_mel_window():
    mel = torch.arange(80 * 200, dtype=torch.float64).reshape(80, 200)
    window = crop_mel_window(mel, start_frame=7)
    assert window.shape == (1, 80, 52) and torch.equal(window[0], mel[:, 22:74])
    assert crop_mel_window(mel, 0, num_frames=25).shape == (1, 80, 80)
    last_ok = (200 - 52) * 25 // 80  # start 46 -> mel 147..198
    crop_mel_window(mel, last_ok)
    with pytest.raises(AudioTooShortError, match="only 200 frames"):
        crop_mel_window(mel, 47)  # needs mel frames 150..201
    with pytest.raises(InvalidInputError):
        crop_mel_window(mel[0], 0)
