"""Whisper features vs the official LatentSync Audio2Feature (spec 1.4, 2.8; parity README section 5).

The official ``whisper_tiny_random.pt`` is rebuilt from ``whisper_tiny_random_encoder.safetensors``
(whisper tiny from the ``dims`` metadata, zero decoder, fp16 encoder tensors, saved as
``{'dims', 'model_state_dict'}``) and loaded through the ``tiny.pt`` load path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from latentsync.audio.whisper import extract_whisper_features, log_mel_spectrogram_official
from latentsync.errors import AudioTooShortError

from conftest import parity_file

whisper = pytest.importorskip("whisper")


def _load_whisper(path):
    try:
        from latentsync.checkpoints import load_whisper
    except ImportError:
        return whisper.load_model(str(path.resolve()), device="cpu")
    return load_whisper(path, device="cpu")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """Official-format whisper tiny checkpoint with the parity encoder, loaded on CPU (fp32)."""
    source = parity_file("whisper_tiny_random_encoder.safetensors")
    with safe_open(str(source), "pt") as f:
        dims = json.loads(f.metadata()["dims"])
    encoder_tensors = load_file(str(source))
    skeleton = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    state_dict = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in skeleton.state_dict().items()}
    assert set(encoder_tensors) <= set(state_dict) and len(encoder_tensors) == 67
    state_dict.update(encoder_tensors)
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": state_dict}, path)
    model = _load_whisper(path).eval()
    assert next(model.parameters()).dtype == torch.float32
    return model


@pytest.fixture(scope="module")
def e2e():
    return load_file(str(parity_file("whisper_e2e.safetensors")))


def test_log_mel_matches_official(e2e):
    log_mel = log_mel_spectrogram_official(e2e["waveform"])
    assert log_mel.shape == e2e["log_mel"].shape == (80, 320) and log_mel.dtype == torch.float32
    assert (log_mel - e2e["log_mel"]).abs().max().item() <= 1e-5
    # numpy input gives the same
    assert torch.equal(log_mel_spectrogram_official(e2e["waveform"].numpy()), log_mel)


def test_log_mel_uses_the_global_maximum():
    gen = torch.Generator().manual_seed(3)
    audio = 0.1 * torch.randn(16000 * 33, generator=gen)
    audio[16000 * 31 :] *= 1e-3  # a quiet tail: per-window normalisation would differ
    ours = log_mel_spectrogram_official(audio)
    assert ours.shape == (80, 3300)
    assert (ours - whisper.log_mel_spectrogram(audio)).abs().max().item() <= 1e-5
    assert ours.min().item() >= ours.max().item() - 2.0 - 1e-6  # clamp at max - 8 in log10 units


def test_audio2feat_matches_official(tiny_whisper, e2e):
    features = extract_whisper_features(tiny_whisper, e2e["waveform"])
    assert features.shape == e2e["audio2feat"].shape == (160, 5, 384)
    assert features.dtype == torch.float32
    diff = (features - e2e["audio2feat"]).abs().max().item()
    assert diff <= 1e-4, diff


def _reference_hidden_states(model, mel_windows):
    """Independent reference: whisper's own encoder forward, states captured with hooks."""
    captured = []
    encoder = model.encoder
    handles = [encoder.blocks[0].register_forward_pre_hook(lambda mod, args: captured.append(args[0]))]
    handles += [block.register_forward_hook(lambda mod, args, out: captured.append(out)) for block in encoder.blocks]
    try:
        with torch.no_grad():
            encoder(mel_windows)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(captured, dim=2)  # [B, 1500, 5, 384]


def test_more_than_30s_concatenates_windows(tiny_whisper):
    gen = torch.Generator().manual_seed(7)
    audio = 0.1 * torch.randn(16000 * 31, generator=gen)  # 31 s -> 3100 mel frames -> 2 windows
    audio[16000 * 30 :] *= 0.01  # quiet last second: the global (whole-file) log-mel max matters
    features = extract_whisper_features(tiny_whisper, audio, batch_size=2)  # both windows in one call
    assert features.shape == (3100 // 2, 5, 384)

    mel = whisper.log_mel_spectrogram(audio)  # whole-file normalisation, openai-whisper's own code
    windows = torch.stack([mel[:, :3000], F.pad(mel[:, 3000:], (0, 3000 - 100))])  # zero padding
    reference = _reference_hidden_states(tiny_whisper, windows)
    first = (features[:1500] - reference[0]).abs().max().item()
    second = (features[1500:] - reference[1, :50]).abs().max().item()  # second window starts at step 1500
    assert first <= 1e-4 and second <= 1e-4, (first, second)


def test_short_audio_raises(tiny_whisper):
    with pytest.raises(AudioTooShortError, match="0 samples"):
        extract_whisper_features(tiny_whisper, np.zeros(0, np.float32))
    with pytest.raises(AudioTooShortError, match="319 samples"):
        extract_whisper_features(tiny_whisper, np.zeros(319, np.float32))
