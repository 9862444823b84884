"""Mel spectrograms without librosa: the Slaney mel filterbank and the SyncNet (Wav2Lip-style) mel.

Two front-ends share the filterbank written here:

* Whisper's log-mel (spec 1.4 step 2, :mod:`latentsync.audio.whisper`) uses the 80-bin Slaney
  filterbank for ``sample_rate=16000, n_fft=400`` (the matrix openai-whisper ships as
  ``mel_filters.npz``).
* The SyncNet mel (spec 3.1), used by SyncNet/U-Net training and the evaluation scripts:
  pre-emphasis 0.97, STFT ``n_fft=800, hop=200, win=800`` (Hann, centred with zero padding, the
  librosa 0.10 default) -> 80 frames per second, magnitude, 80-bin Slaney mel (55-7600 Hz),
  ``20*log10(max(1e-5, x)) - 20``, then ``clip(8*(S + 100)/100 - 4, -4, 4)``.

Everything is computed in float64 with numpy, the way librosa 0.10 / scipy compute it (pre-emphasis
promotes the waveform to float64; the filterbank is stored in float32 like librosa's), so the result
matches the librosa-based reference to ~1e-12.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from latentsync.errors import AudioTooShortError, InvalidInputError

# SyncNet mel parameters (spec 3.1; Wav2Lip's hparams as used by LatentSync's configs/audio.yaml).
SYNCNET_SAMPLE_RATE = 16000
SYNCNET_N_FFT = 800
SYNCNET_HOP_LENGTH = 200  # 80 mel frames per second at 16 kHz
SYNCNET_WIN_LENGTH = 800
SYNCNET_N_MELS = 80
SYNCNET_FMIN = 55.0
SYNCNET_FMAX = 7600.0
SYNCNET_PREEMPHASIS = 0.97
SYNCNET_MIN_LEVEL_DB = -100.0
SYNCNET_REF_LEVEL_DB = 20.0
SYNCNET_MAX_ABS_VALUE = 4.0
SYNCNET_MEL_FPS = SYNCNET_SAMPLE_RATE / SYNCNET_HOP_LENGTH  # 80.0 Hz


def as_waveform(waveform, name: str = "waveform_16k") -> torch.Tensor:
    """Validate a mono waveform and return it as a float32 torch tensor ``[T]`` (device kept).

    Args:
        waveform: numpy array or torch tensor of shape ``[T]`` (or ``[1, T]``), float samples in
            about -1..1 at the caller's sample rate (16 kHz everywhere in this package).
        name: name of the argument, used in error messages.

    Raises:
        InvalidInputError: not an array/tensor, more than one channel, or non-finite samples.
    """
    if isinstance(waveform, np.ndarray):
        if waveform.dtype.kind not in "fiu":
            raise InvalidInputError(f"{name}: expected a float array of audio samples, got dtype {waveform.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(waveform))
    elif isinstance(waveform, torch.Tensor):
        tensor = waveform
    else:
        raise InvalidInputError(
            f"{name}: expected a numpy array or torch tensor of audio samples, got {type(waveform).__name__}"
        )
    if tensor.ndim == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 1:
        raise InvalidInputError(
            f"{name}: expected mono samples of shape [T] (16 kHz float32), got shape {tuple(tensor.shape)}; "
            "mix the channels down first"
        )
    tensor = tensor.to(torch.float32)
    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise InvalidInputError(f"{name}: the audio contains NaN or infinite samples")
    return tensor


# ----------------------------------------------------------------------------------------------
# Slaney mel scale and filterbank (librosa.filters.mel defaults: htk=False, norm="slaney")
# ----------------------------------------------------------------------------------------------

_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel_slaney(frequencies_hz) -> np.ndarray:
    """Hz -> Slaney mel (linear below 1 kHz, logarithmic above), float64 array."""
    f = np.asarray(frequencies_hz, dtype=np.float64)
    mels = f / _F_SP
    log_part = f >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP, mels)


def mel_to_hz_slaney(mels) -> np.ndarray:
    """Slaney mel -> Hz, the inverse of :func:`hz_to_mel_slaney`, float64 array."""
    m = np.asarray(mels, dtype=np.float64)
    freqs = _F_SP * m
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), freqs)


@lru_cache(maxsize=16)
def _slaney_mel_filterbank_cached(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)  # [n_fft//2 + 1] Hz
    # n_mels + 2 band edges equally spaced on the mel scale
    edges_hz = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_freqs[None, :]  # [n_mels + 2, n_bins]
    weights = np.zeros((n_mels, fft_freqs.shape[0]), dtype=np.float32)
    for m in range(n_mels):
        rising = -offsets[m] / widths[m]
        falling = offsets[m + 2] / widths[m + 1]
        weights[m] = np.maximum(0.0, np.minimum(rising, falling))  # rounded to float32 like librosa
    # Slaney area normalisation: each triangle integrates to a constant
    weights *= (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


def slaney_mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-style mel filterbank, equal to ``librosa.filters.mel`` (0.10, ``htk=False, norm="slaney"``).

    Args:
        sample_rate: Hz. n_fft: FFT size (``n_fft // 2 + 1`` frequency bins). n_mels: number of bands.
        fmin, fmax: band range in Hz; ``fmax=None`` means ``sample_rate / 2``.

    Returns:
        float32 ``[n_mels, n_fft // 2 + 1]`` (read-only, cached) triangular weights with Slaney
        area normalisation. ``(16000, 400, 80)`` is Whisper's ``mel_filters.npz["mel_80"]``.

    Raises:
        InvalidInputError: non-positive sizes or a band range outside ``[0, sample_rate / 2]``.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    if sample_rate <= 0 or n_fft <= 0 or n_mels <= 0:
        raise InvalidInputError(
            f"mel filterbank: sample_rate, n_fft and n_mels must be positive, got {sample_rate}, {n_fft}, {n_mels}"
        )
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise InvalidInputError(
            f"mel filterbank: expected 0 <= fmin < fmax <= sample_rate/2 = {sample_rate / 2}, got fmin={fmin}, fmax={fmax}"
        )
    return _slaney_mel_filterbank_cached(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax))


# ----------------------------------------------------------------------------------------------
# SyncNet mel (spec 3.1)
# ----------------------------------------------------------------------------------------------


def _hann_periodic(n: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", n, fftbins=True)``), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_magnitude_centered(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``|STFT|`` like ``np.abs(librosa.stft(y, n_fft, hop_length))`` with librosa 0.10 defaults.

    Hann window of length ``n_fft``, the signal zero-padded by ``n_fft // 2`` on both sides
    (``center=True, pad_mode="constant"``).

    Args:
        y: float64 ``[T]``. n_fft, hop_length: samples.

    Returns:
        float64 ``[n_fft // 2 + 1, 1 + T // hop_length]`` magnitudes.
    """
    y = np.asarray(y, dtype=np.float64)
    padded = np.pad(y, (n_fft // 2, n_fft // 2), mode="constant")
    num_frames = 1 + (padded.shape[0] - n_fft) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:num_frames]  # [F, n_fft]
    spectrum = np.fft.rfft(frames * _hann_periodic(n_fft)[None, :], axis=-1)  # [F, n_bins]
    return np.abs(spectrum).T


def syncnet_mel_spectrogram(waveform_16k) -> torch.Tensor:
    """SyncNet / Wav2Lip-style normalised mel spectrogram of a 16 kHz waveform (spec 3.1).

    Steps: pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``y[0] = x[0]``); ``|STFT|`` with n_fft 800,
    hop 200, Hann window 800, centred with zero padding; 80-bin Slaney mel (55-7600 Hz);
    ``S = 20*log10(max(1e-5, mel)) - 20`` dB; ``clip(8*(S + 100)/100 - 4, -4, 4)``.

    Args:
        waveform_16k: mono float samples ``[T]`` (numpy or torch), 16 kHz, about -1..1.

    Returns:
        CPU torch.float64 ``[80, 1 + T // 200]``, values in ``[-4, 4]``, 80 frames per second
        (frame ``t`` is centred on sample ``200 t``). This is the array LatentSync caches as
        ``<name>_mel.pt``.

    Raises:
        AudioTooShortError: empty waveform.
        InvalidInputError: see :func:`as_waveform`.
    """
    x = as_waveform(waveform_16k).detach().cpu().numpy().astype(np.float64)
    if x.shape[0] == 0:
        raise AudioTooShortError("syncnet_mel_spectrogram: waveform_16k is empty (0 samples); expected 16 kHz audio")
    emphasised = np.empty_like(x)
    emphasised[0] = x[0]
    emphasised[1:] = x[1:] - SYNCNET_PREEMPHASIS * x[:-1]
    magnitude = stft_magnitude_centered(emphasised, SYNCNET_N_FFT, SYNCNET_HOP_LENGTH)
    basis = slaney_mel_filterbank(SYNCNET_SAMPLE_RATE, SYNCNET_N_FFT, SYNCNET_N_MELS, SYNCNET_FMIN, SYNCNET_FMAX)
    mel = np.dot(basis, magnitude)  # float32 basis x float64 magnitudes -> float64
    min_level = np.exp(SYNCNET_MIN_LEVEL_DB / 20.0 * np.log(10.0))
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - SYNCNET_REF_LEVEL_DB
    scaled = (2.0 * SYNCNET_MAX_ABS_VALUE) * ((db - SYNCNET_MIN_LEVEL_DB) / (-SYNCNET_MIN_LEVEL_DB)) - SYNCNET_MAX_ABS_VALUE
    normalised = np.clip(scaled, -SYNCNET_MAX_ABS_VALUE, SYNCNET_MAX_ABS_VALUE)
    return torch.from_numpy(np.ascontiguousarray(normalised))


def mel_window_length(num_frames: int = 16, fps: float = 25.0) -> int:
    """Number of SyncNet mel frames covering ``num_frames`` video frames: ``ceil(num_frames * 80 / fps)``.

    52 for 16 frames and 80 for 25 frames at 25 fps (spec 3.1: ``ceil(16/5 * 16)``).
    """
    if num_frames <= 0 or not (fps > 0 and math.isfinite(fps)):
        raise InvalidInputError(f"mel_window_length: expected num_frames > 0 and fps > 0, got {num_frames}, {fps}")
    if float(fps) == 25.0:
        return int(math.ceil(num_frames / 5.0 * 16.0))  # the official expression
    return int(math.ceil(num_frames * SYNCNET_MEL_FPS / float(fps)))


def mel_window_start(start_frame: int, fps: float = 25.0) -> int:
    """First SyncNet mel frame of video frame ``start_frame``: ``int(80 * start_frame / fps)`` (spec 3.1)."""
    if start_frame < 0 or not (fps > 0 and math.isfinite(fps)):
        raise InvalidInputError(f"mel_window_start: expected start_frame >= 0 and fps > 0, got {start_frame}, {fps}")
    return int(SYNCNET_MEL_FPS * (start_frame / float(fps)))


def crop_mel_window(mel: torch.Tensor, start_frame: int, num_frames: int = 16, fps: float = 25.0) -> torch.Tensor:
    """Cut the SyncNet mel window of a clip of ``num_frames`` video frames starting at ``start_frame``.

    Args:
        mel: ``[80, T_mel]`` from :func:`syncnet_mel_spectrogram` (any float dtype).
        start_frame: index of the clip's first video frame (>= 0).
        num_frames: clip length in video frames (16 for the released SyncNet).
        fps: video frame rate (25 in training data).

    Returns:
        ``[1, 80, mel_window_length(num_frames, fps)]`` view of ``mel`` (same dtype), e.g. ``[1, 80, 52]``.

    Raises:
        AudioTooShortError: the mel ends before the window does (the official datasets skip such clips).
        InvalidInputError: ``mel`` is not 2-D, or bad ``start_frame`` / ``num_frames`` / ``fps``.
    """
    if not isinstance(mel, torch.Tensor) or mel.ndim != 2:
        raise InvalidInputError(f"crop_mel_window: expected mel of shape [80, T_mel], got {getattr(mel, 'shape', type(mel))}")
    start = mel_window_start(start_frame, fps)
    length = mel_window_length(num_frames, fps)
    if start + length > mel.shape[1]:
        raise AudioTooShortError(
            f"crop_mel_window: frames {start_frame}..{start_frame + num_frames - 1} at {fps} fps need mel frames "
            f"{start}..{start + length - 1}, but the mel has only {mel.shape[1]} frames "
            f"({mel.shape[1] / SYNCNET_MEL_FPS:.2f} s)"
        )
    return mel[:, start : start + length].unsqueeze(0)
