"""Numerical parity of the 3D U-Net with the official implementation (parity README section 3).

``tiny_unet.safetensors`` holds the official tiny model's full state dict (1246 tensors, random
non-zero weights); ``tiny_unet_io.safetensors`` one forward's inputs and output and
``tiny_unet_intermediates.safetensors`` forward-hook outputs of the same call. All fp32 on CPU.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import load_fixture_json, parity_file
from latentsync.models.motion_module import SinusoidalPositionalEncoding
from latentsync.models.unet import UNet3DConditionModel

TOLERANCE = 1e-4  # parity README: ~1e-4 absolute on the tiny U-Net output (max |output| = 2.32)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def official_state_dict() -> dict[str, torch.Tensor]:
    return load_file(parity_file("tiny_unet.safetensors"))


@pytest.fixture(scope="module")
def tiny_unet(official_state_dict) -> UNet3DConditionModel:
    import json

    config = json.loads(parity_file("tiny_unet_config.json").read_text())
    assert config == load_fixture_json("tiny_unet_config.json")
    model = UNet3DConditionModel.from_config(config).eval()
    model.load_state_dict(official_state_dict, strict=True)
    return model


@pytest.fixture(scope="module")
def reference_run(tiny_unet):
    """One forward on the reference inputs with hooks at the reference hook points."""
    io = load_file(parity_file("tiny_unet_io.safetensors"))
    expected = load_file(parity_file("tiny_unet_intermediates.safetensors"))
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for key in expected:
        name = key.removeprefix("intermediate.")

        def hook(_module, _inputs, output, name=name):
            captured[name] = output[0] if isinstance(output, tuple) else output

        handles.append(tiny_unet.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = tiny_unet(io["sample"], io["timestep"], encoder_hidden_states=io["encoder_hidden_states"]).sample
    finally:
        for handle in handles:
            handle.remove()
    return io, out, expected, captured


def test_state_dict_round_trip(tiny_unet, official_state_dict):
    ours = tiny_unet.state_dict()
    assert sorted(ours) == sorted(official_state_dict)
    for key, value in official_state_dict.items():
        assert torch.equal(ours[key], value), key


def test_position_encoding_buffers_equal_official(official_state_dict):
    """The ``pe`` buffers we generate (not loaded) equal the official ones."""
    pe_keys = [k for k in official_state_dict if k.endswith("pos_encoder.pe")]
    assert len(pe_keys) == 40
    for key in pe_keys:
        official = official_state_dict[key]
        fresh = SinusoidalPositionalEncoding(official.shape[-1], official.shape[1]).pe
        torch.testing.assert_close(fresh, official, rtol=0, atol=1e-6)


def test_output_matches_official(reference_run):
    io, out, _, _ = reference_run
    assert out.shape == io["output"].shape == (2, 4, 16, 32, 32)
    diff = (out - io["output"]).abs().max().item()
    print(f"tiny U-Net output max abs diff: {diff:.3e}")
    assert diff <= TOLERANCE


def test_intermediates_match_official(reference_run):
    _, _, expected, captured = reference_run
    assert len(expected) == 6
    for key, ref in expected.items():
        got = captured[key.removeprefix("intermediate.")]
        assert got.shape == ref.shape, key
        diff = (got - ref).abs().max().item()
        print(f"{key} max abs diff: {diff:.3e}")
        assert diff <= TOLERANCE, key


def test_four_dim_audio_layout_gives_same_output(tiny_unet, reference_run):
    """``[B, F, 50, 384]`` audio is read as rows ``b*F + f`` (einops ``(b f)``), like the official code.

    Checked on a cropped copy of the reference input (B=2, F=4, 16x16) to keep the test short.
    """
    io = reference_run[0]
    sample = io["sample"][:, :, :4, :16, :16]
    audio = io["encoder_hidden_states"].reshape(2, 16, 50, 384)[:, :4]
    with torch.no_grad():
        flat = tiny_unet(sample, io["timestep"], audio.reshape(8, 50, 384)).sample
        four_dim = tiny_unet(sample, io["timestep"], audio).sample
        swapped = tiny_unet(sample, io["timestep"], audio.transpose(0, 1).reshape(8, 50, 384)).sample
    assert torch.equal(flat, four_dim)
    assert (flat - swapped).abs().max() > 1e-3  # frame-major rows would be wrong


def test_seeded_construction_draws_the_official_initial_weights(official_state_dict):
    """Built after ``torch.manual_seed(0)``, every randomly initialised tensor equals the official one.

    (The reference file replaced the constant tensors -- zero-initialised layers, norm weights and
    biases -- by random values, so only the non-constant ones are compared.)
    """
    torch.manual_seed(0)
    fresh = UNet3DConditionModel.from_config(load_fixture_json("tiny_unet_config.json")).state_dict()
    random_keys = [k for k, v in fresh.items() if not (v == 0).all() and not (v == 1).all() and not k.endswith(".pe")]
    assert len(random_keys) == 1246 - 40 - 233 - 189
    for key in random_keys:
        assert torch.equal(fresh[key], official_state_dict[key]), key
