"""Tiny random-weight models and official-format files (latentsync.models.tiny)."""

from __future__ import annotations

import time

import pytest
import torch

from conftest import FIXTURES, load_fixture_json
from latentsync import checkpoints as ck
from latentsync.models import tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpts")
    start = time.perf_counter()
    tiny.write_tiny_checkpoint_dir(directory)
    elapsed = time.perf_counter() - start
    print(f"write_tiny_checkpoint_dir: {elapsed:.2f} s")
    # < 5 s on a quiet 2-core machine; generous bound for shared CI runners
    assert elapsed < 60
    return directory


def test_configs_equal_the_parity_fixtures():
    assert tiny.tiny_unet_config() == load_fixture_json("tiny_unet_config.json")
    assert tiny.tiny_syncnet_config() == load_fixture_json("tiny_syncnet_config.json")
    cfg = tiny.tiny_unet_config()
    cfg["block_out_channels"][0] = 1  # fresh copies
    assert tiny.tiny_unet_config()["block_out_channels"][0] == 32


def test_layout(tiny_dir):
    expected = [
        "latentsync_unet.pt",
        "latentsync_unet.yaml",
        "stable_syncnet.pt",
        "stable_syncnet.yaml",
        "whisper/tiny.pt",
        "sd-vae-ft-mse/config.json",
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        "TINY_RANDOM_WEIGHTS.txt",
    ]
    for name in expected:
        assert (tiny_dir / name).is_file(), name
    sizes = {name: (tiny_dir / name).stat().st_size for name in expected}
    print("tiny file sizes:", sizes)
    assert sizes["latentsync_unet.pt"] < 50e6 and sizes["whisper/tiny.pt"] < 30e6


def test_tiny_unet_keys_and_nonconstant_weights():
    unet = tiny.build_tiny_unet(seed=0)
    keys = [row.split("\t")[0] for row in (FIXTURES / "unet_keys_stage2_512.tsv").read_text().splitlines()[1:]]
    assert sorted(unet.state_dict()) == sorted(keys)
    for name, p in unet.named_parameters():
        assert not torch.all(p == 0) and not torch.all(p == 1), name
    again = tiny.build_tiny_unet(seed=0).state_dict()
    other = tiny.build_tiny_unet(seed=1).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in unet.state_dict().items())
    assert not torch.equal(unet.conv_in.weight, other["conv_in.weight"])


def test_tiny_unet_output_depends_on_zero_init_layers_and_audio(tiny_dir):
    unet = ck.load_unet(tiny_dir / "latentsync_unet.pt")  # config from the marker file
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 13, 2, 16, 16, generator=g)
    audio = torch.randn(1, 2, 50, 384, generator=g)
    with torch.no_grad():
        out = unet(sample, torch.tensor(501), encoder_hidden_states=audio).sample
        silent = unet(sample, torch.tensor(501), encoder_hidden_states=torch.zeros_like(audio)).sample
        proj = [m for n, m in unet.named_modules() if n.endswith("temporal_transformer.proj_out")][0]
        proj.weight.zero_()
        proj.bias.zero_()
        no_mm = unet(sample, torch.tensor(501), encoder_hidden_states=audio).sample
    assert out.shape == (1, 4, 2, 16, 16)
    assert out.abs().max() > 1e-3
    assert (out - silent).abs().max() > 1e-4
    assert (out - no_mm).abs().max() > 1e-5


def test_tiny_whisper_file_format_and_encoder(tiny_dir):
    raw = torch.load(tiny_dir / "whisper" / "tiny.pt", weights_only=True)
    assert set(raw) == {"dims", "model_state_dict"}
    dims = raw["dims"]
    assert (dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"], dims["n_audio_layer"]) == (80, 1500, 384, 4)
    assert all(v.dtype == torch.float16 for v in raw["model_state_dict"].values())
    import whisper

    model = ck.load_whisper(tiny_dir / "whisper" / "tiny.pt")
    reference = whisper.load_model(str((tiny_dir / "whisper" / "tiny.pt").resolve()), device="cpu")
    mel = whisper.log_mel_spectrogram(torch.zeros(16000 * 30)).unsqueeze(0)
    with torch.no_grad():
        feats = model.encoder(mel)
        ref = reference.encoder(mel)
    assert feats.shape == (1, 1500, 384)
    assert torch.equal(feats, ref)
    assert model.is_multilingual  # full vocabulary kept, only the decoder is narrow


def test_tiny_vae_folder(tiny_dir):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(tiny_dir / "sd-vae-ft-mse"))
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    assert vae.config.latent_channels == 4
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
    assert z.shape == (1, 4, 8, 8) and y.shape == x.shape


def test_tiny_syncnet_file(tiny_dir):
    model = ck.load_syncnet(tiny_dir / "stable_syncnet.pt")
    assert model.audio_encoder.norm_out.num_channels == 64
    assert len(model.state_dict()) == 266


def test_randomize_constant_tensors():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    torch.nn.init.zeros_(m[0].weight)
    assert tiny.randomize_constant_tensors(m, seed=1) == 3  # linear weight, LN weight (1s), LN bias (0s)
    assert not torch.all(m[1].weight == 1) and not torch.all(m[0].weight == 0)
