"""Whisper audio features: official log-mel + Whisper encoder hidden states at 50 Hz (spec 1.4, 2.8).

LatentSync conditions the U-Net on the Whisper *tiny* encoder. For a whole audio file:

1. log-mel over the **whole** file (:func:`log_mel_spectrogram_official`): STFT n_fft 400, hop 160,
   Hann, centred (reflect padding), last frame dropped -> ``T // 160`` frames at 100 Hz; 80-bin
   Slaney mel; ``log10(max(mel, 1e-10))``; clamp to ``>= global max - 8``; ``(x + 4) / 4``.
2. Cut into consecutive 3000-frame (30 s) windows, zero-pad each (in the normalised log-mel
   domain) to 3000 frames, run the encoder (:func:`encoder_hidden_states`).
3. Keep 5 hidden states per encoder step (input of block 1 = after conv1-GELU, conv2-GELU and the
   positional embedding, then the outputs of blocks 1-4; ``ln_post`` unused) and the first
   ``floor(n_mel_in_window / 2)`` steps of each window; concatenate -> ``[L, 5, 384]``
   (:func:`extract_whisper_features`).

The model is an openai-whisper ``whisper.model.Whisper`` (or its ``AudioEncoder``), loaded by
``latentsync.checkpoints.load_whisper``. Its submodules are called in order; nothing is patched.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from latentsync.audio.mel import as_waveform, slaney_mel_filterbank
from latentsync.errors import AudioTooShortError, InvalidInputError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160  # 100 mel frames per second
N_MELS = 80
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
ENCODER_STEPS_PER_SECOND = MEL_FRAMES_PER_SECOND // 2  # 50 (conv2 has stride 2)
DEFAULT_WINDOW_BATCH = 4  # 30 s windows per encoder call


@lru_cache(maxsize=8)
def _mel_filters_cpu(n_mels: int) -> torch.Tensor:
    return torch.from_numpy(slaney_mel_filterbank(SAMPLE_RATE, N_FFT, n_mels).copy())


@torch.no_grad()
def log_mel_spectrogram_official(
    waveform_16k, n_mels: int = N_MELS, device: torch.device | str | None = None
) -> torch.Tensor:
    """Whisper's normalised log-mel spectrogram of a whole file (spec 1.4 step 2).

    Args:
        waveform_16k: mono float32 samples ``[T]`` at 16 kHz, about -1..1 (numpy or torch).
        n_mels: 80 (Whisper tiny..large-v2) or 128 (large-v3).
        device: where to compute; default: the waveform's device.

    Returns:
        float32 ``[n_mels, T // 160]`` on ``device``; 100 frames per second, values in
        ``[m - 8 + 4) / 4, (m + 4) / 4]`` with ``m`` the file's maximum log10 power. The maximum is
        taken over the whole file, not per 30 s window.

    Raises:
        AudioTooShortError: fewer than 320 samples (20 ms; no encoder step would result).
        InvalidInputError: not mono, non-finite samples (see ``latentsync.audio.mel.as_waveform``).
    """
    audio = as_waveform(waveform_16k)
    if device is not None:
        audio = audio.to(device)
    if audio.shape[0] < 2 * HOP_LENGTH:
        raise AudioTooShortError(
            f"waveform_16k: {audio.shape[0]} samples ({audio.shape[0] / SAMPLE_RATE:.4f} s at 16 kHz) is too short "
            f"for Whisper features; expected at least {2 * HOP_LENGTH} samples (20 ms)"
        )
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = stft[..., :-1].abs() ** 2  # [n_fft//2 + 1, T // 160], last frame dropped
    mel = _mel_filters_cpu(n_mels).to(audio.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def _audio_encoder(model) -> torch.nn.Module:
    """The ``AudioEncoder`` of a whisper ``Whisper`` (or the encoder itself); checks its parts."""
    encoder = getattr(model, "encoder", model)
    for part in ("conv1", "conv2", "positional_embedding", "blocks"):
        if not hasattr(encoder, part):
            raise InvalidInputError(
                f"model: expected an openai-whisper Whisper model or its AudioEncoder (with conv1, conv2, "
                f"positional_embedding, blocks), got {type(model).__name__} without '{part}'"
            )
    return encoder


@torch.no_grad()
def encoder_hidden_states(model, mel_windows: torch.Tensor) -> torch.Tensor:
    """Run the Whisper encoder on full windows and return every block's input/output (spec 1.4 step 4).

    Args:
        model: openai-whisper ``Whisper`` or its ``AudioEncoder``.
        mel_windows: ``[B, n_mels, 2 * n_audio_ctx]`` (``[B, 80, 3000]`` for tiny) normalised log-mel;
            computed in the dtype and on the device of this tensor (weights are cast by
            openai-whisper's layers, so fp16 input on an fp32 model runs in fp16 like the official
            CUDA path).

    Returns:
        ``[B, n_audio_ctx, n_audio_layer + 1, n_audio_state]`` (``[B, 1500, 5, 384]``) in the
        computation dtype: index 0 = after conv1-GELU, conv2-GELU and the positional embedding,
        index k = output of block k. ``ln_post`` is not applied.
    """
    encoder = _audio_encoder(model)
    x = F.gelu(encoder.conv1(mel_windows))
    x = F.gelu(encoder.conv2(x))
    x = x.permute(0, 2, 1)
    if x.shape[1:] != encoder.positional_embedding.shape:
        raise InvalidInputError(
            f"mel_windows: the encoder expects {2 * encoder.positional_embedding.shape[0]} mel frames per window, "
            f"got shape {tuple(mel_windows.shape)}"
        )
    x = (x + encoder.positional_embedding).to(x.dtype)
    states = [x]
    for block in encoder.blocks:
        x = block(x)
        states.append(x)
    return torch.stack(states, dim=2)


@torch.no_grad()
def extract_whisper_features(
    model,
    waveform_16k,
    batch_size: int = DEFAULT_WINDOW_BATCH,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Whisper encoder features of a whole waveform at 50 steps per second (spec 1.4 steps 2-5).

    Args:
        model: openai-whisper ``Whisper`` (e.g. from ``latentsync.checkpoints.load_whisper``) or its
            ``AudioEncoder``; device and dtype of the computation follow its weights.
        waveform_16k: mono float32 samples ``[T]``, 16 kHz, about -1..1 (numpy or torch).
        batch_size: number of 30 s windows per encoder call (memory vs speed; results equal).
        dtype: computation dtype override, e.g. ``torch.float16`` to reproduce the official CUDA
            path with an fp32 model; default: the model's weight dtype.

    Returns:
        float32 ``[L, n_audio_layer + 1, n_audio_state]`` (``[L, 5, 384]`` for tiny) on the model's
        device, with ``L = sum over 30 s windows of floor(n_mel_in_window / 2)`` (about T / 320);
        step ``j`` covers 20 ms starting at ``j / 50`` s.

    Raises:
        AudioTooShortError: empty audio or fewer than 320 samples.
        InvalidInputError: not mono / non-finite samples / not a Whisper model / bad batch_size.
    """
    encoder = _audio_encoder(model)
    if batch_size < 1:
        raise InvalidInputError(f"batch_size: expected >= 1 window per encoder call, got {batch_size}")
    weight = encoder.conv1.weight
    device = weight.device
    dtype = weight.dtype if dtype is None else dtype
    n_mels = int(weight.shape[1])
    window_frames = 2 * int(encoder.positional_embedding.shape[0])  # 3000 = 30 s

    mel = log_mel_spectrogram_official(waveform_16k, n_mels=n_mels, device=device)  # float32 [n_mels, N]
    num_mel = mel.shape[1]
    starts = list(range(0, num_mel, window_frames))
    features = []
    for first in range(0, len(starts), batch_size):
        batch_starts = starts[first : first + batch_size]
        windows = torch.zeros((len(batch_starts), n_mels, window_frames), dtype=torch.float32, device=device)
        kept = []
        for b, start in enumerate(batch_starts):
            real = min(window_frames, num_mel - start)
            windows[b, :, :real] = mel[:, start : start + real]  # zero padding beyond the real frames
            kept.append(real // 2)
        states = encoder_hidden_states(encoder, windows.to(dtype))
        features.extend(states[b, : kept[b]].float() for b in range(len(batch_starts)))
    return torch.cat(features, dim=0)
