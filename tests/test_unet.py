"""Structure, config handling, input validation and small forward checks of the 3D U-Net.

Full-size models are only built on the meta device (no weights allocated, no forward).
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import FIXTURES, load_fixture_json
from latentsync.errors import InvalidInputError
from latentsync.models.tiny import randomize_constant_tensors
from latentsync.models.unet import UNet3DConditionModel, UNet3DOutput, resolve_unet_config


def _reference_keys(name: str = "unet_keys_stage2_512.tsv") -> list[tuple[str, str, str]]:
    lines = (FIXTURES / name).read_text().splitlines()
    assert lines[0].split("\t") == ["key", "shape", "dtype"]
    return [tuple(line.split("\t")) for line in lines[1:]]


def _key_table(model: torch.nn.Module) -> list[tuple[str, str, str]]:
    return [
        (k, ",".join(str(s) for s in v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    ]


def _meta_unet(cfg: dict) -> UNet3DConditionModel:
    with torch.device("meta"):
        return UNet3DConditionModel.from_config(cfg)


def _tiny_cfg(**overrides) -> dict:
    cfg = load_fixture_json("tiny_unet_config.json")
    cfg.update(overrides)
    return cfg


def _small_inputs(b=1, f=2, hw=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(b, 13, f, hw, hw, generator=gen)
    audio = torch.randn(b * f, 50, 384, generator=gen)
    return sample, audio


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_unet() -> UNet3DConditionModel:
    torch.manual_seed(0)
    model = UNet3DConditionModel.from_config(_tiny_cfg()).eval()
    randomize_constant_tensors(model)
    return model


# ---------------------------------------------------------------- state-dict layout (Appendix A.1)
def _stage2_512_model_section() -> dict:
    """The official stage2_512.yaml ``model:`` section: the tiny fixture with the full-size widths."""
    return _tiny_cfg(block_out_channels=[320, 640, 1280, 1280], norm_num_groups=32, attention_head_dim=8, sample_size=64)


def test_full_size_keys_shapes_order_match_official():
    model = _meta_unet(_stage2_512_model_section())
    assert _key_table(model) == _reference_keys()
    buffers = [k for k, _ in model.named_buffers()]
    assert len(buffers) == 40 and all(k.endswith("pos_encoder.pe") for k in buffers)
    assert sum(v.numel() for v in model.state_dict().values()) == 1_267_944_644  # spec 2.5
    # missing keys default to the 1.6 model
    assert resolve_unet_config({}) == model.config
    assert model.config["in_channels"] == 13 and model.config["cross_attention_dim"] == 384


def test_tiny_key_set_equals_official():
    model = _meta_unet(_tiny_cfg())
    assert [k for k, _, _ in _key_table(model)] == [k for k, _, _ in _reference_keys()]


@pytest.mark.parametrize(
    ("overrides", "count"),
    [({"use_motion_module": False}, 686), ({"motion_module_decoder_only": True}, 1022)],
)
def test_stage_variant_key_counts(overrides, count):
    model = _meta_unet(overrides)
    keys = list(model.state_dict())
    assert len(keys) == count
    official = [k for k, _, _ in _reference_keys()]
    assert keys == [k for k in official if k in set(keys)]  # a subset, in official order
    if overrides.get("motion_module_decoder_only"):
        assert not any(k.startswith("down_blocks") and "motion_modules" in k for k in keys)


# ---------------------------------------------------------------- init (spec 2.5)
def test_zero_init_and_position_encoding():
    torch.manual_seed(0)
    model = UNet3DConditionModel.from_config(_tiny_cfg())
    sd = model.state_dict()
    zero = ["conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias"]
    zero += [k for k in sd if k.endswith("temporal_transformer.proj_out.weight") or k.endswith("temporal_transformer.proj_out.bias")]
    assert len(zero) == 4 + 40
    for k in zero:
        assert not sd[k].any(), k
    assert sd["down_blocks.0.resnets.0.conv1.weight"].abs().sum() > 0
    pe = sd["up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"]
    c = pe.shape[-1]
    t, i = 5, 3
    assert pe.shape == (1, 24, 32)
    assert pe[0, t, 2 * i].item() == pytest.approx(math.sin(t / 10000 ** (2 * i / c)), abs=1e-6)
    assert pe[0, t, 2 * i + 1].item() == pytest.approx(math.cos(t / 10000 ** (2 * i / c)), abs=1e-6)


# ---------------------------------------------------------------- config handling
def test_config_unknown_key_and_unsupported_variant_rejected():
    with pytest.raises(InvalidInputError, match="unknown keys"):
        UNet3DConditionModel.from_config(_tiny_cfg(blocks_out_channel=[1]))
    with pytest.raises(InvalidInputError, match="use_linear_projection"):
        UNet3DConditionModel.from_config(_tiny_cfg(use_linear_projection=True))
    with pytest.raises(InvalidInputError, match="down_block_types"):
        UNet3DConditionModel.from_config(_tiny_cfg(down_block_types=["CrossAttnDownBlock3D"] * 3))
    # official keys at their only supported value are accepted
    model = _meta_unet(_tiny_cfg(use_inflated_groupnorm=False, upcast_attention=False))
    assert model.config["block_out_channels"] == [32, 64, 96, 96]


# ---------------------------------------------------------------- input validation
@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 9, 2, 8, 8), "13 channels"),
        ((1, 13, 25, 8, 8), "temporal_position_encoding_max_len=24"),
        ((1, 13, 2, 12, 8), "divisible by 8"),
        ((13, 2, 8, 8), "5-D"),
    ],
)
def test_bad_sample_shapes_raise(tiny_unet, shape, match):
    sample = torch.zeros(shape)
    frames = shape[2] if len(shape) == 5 else 2
    with pytest.raises(InvalidInputError, match=match):
        tiny_unet(sample, 10, torch.zeros(frames, 50, 384))


def test_bad_audio_and_timestep_raise(tiny_unet):
    sample = torch.zeros(2, 13, 2, 8, 8)
    with pytest.raises(InvalidInputError, match="encoder_hidden_states"):
        tiny_unet(sample, 10, torch.zeros(2, 50, 384))  # B rows instead of B*F
    with pytest.raises(InvalidInputError, match="encoder_hidden_states"):
        tiny_unet(sample, 10, torch.zeros(4, 50, 768))  # wrong width
    with pytest.raises(InvalidInputError, match="timestep"):
        tiny_unet(sample, torch.tensor([1, 2, 3]), torch.zeros(4, 50, 384))


def test_stage1_model_accepts_more_than_24_frames():
    torch.manual_seed(0)
    model = UNet3DConditionModel.from_config(_tiny_cfg(use_motion_module=False)).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 13, 25, 8, 8), 10, torch.zeros(25, 50, 384)).sample
    assert out.shape == (1, 4, 25, 8, 8)


# ---------------------------------------------------------------- forward behaviour
def test_forward_shapes_and_equivalent_call_forms(tiny_unet):
    sample, audio = _small_inputs(b=2, f=3)
    with torch.no_grad():
        out = tiny_unet(sample, torch.tensor(501), encoder_hidden_states=audio)
        assert isinstance(out, UNet3DOutput) and out.deep_features is None
        assert out.sample.shape == (2, 4, 3, 8, 8) and out.sample.dtype == torch.float32
        assert torch.isfinite(out.sample).all() and out.sample.abs().max() > 0
        same = [
            tiny_unet(sample, 501, audio.reshape(2, 3, 50, 384)).sample,  # [B, F, 50, 384] layout
            tiny_unet(sample, torch.tensor([501, 501]), audio).sample,
            tiny_unet(sample, 501.0, audio).sample,
        ]
        for other in same:
            torch.testing.assert_close(other, out.sample, rtol=0, atol=1e-6)
        assert not torch.allclose(tiny_unet(sample, 200, audio).sample, out.sample, atol=1e-4)
        assert not torch.allclose(tiny_unet(sample, 501, torch.zeros_like(audio)).sample, out.sample, atol=1e-4)


def test_batch_items_are_independent(tiny_unet):
    sample, audio = _small_inputs(b=2, f=2)
    with torch.no_grad():
        both = tiny_unet(sample, 501, audio).sample
        first = tiny_unet(sample[:1], 501, audio[:2]).sample
    torch.testing.assert_close(both[:1], first, rtol=0, atol=1e-5)


def test_resnet_groupnorm_statistics_span_frames():
    """Spec 2.2: without temporal layers, frames still interact through the resnet GroupNorms."""
    torch.manual_seed(0)
    model = UNet3DConditionModel.from_config(_tiny_cfg(use_motion_module=False)).eval()
    randomize_constant_tensors(model)
    sample, audio = _small_inputs(b=1, f=2)
    changed = sample.clone()
    changed[:, :, 1] *= 3.0  # only frame 1 changes
    with torch.no_grad():
        a = model(sample, 501, audio).sample
        b = model(changed, 501, audio).sample
        alone = model(sample[:, :, :1], 501, audio[:1]).sample
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-3  # frame 0 output depends on frame 1
    assert (a[:, :, :1] - alone).abs().max() > 1e-3  # not a per-frame 2-D U-Net


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = UNet3DConditionModel.from_config(_tiny_cfg()).train()
    randomize_constant_tensors(model)
    sample, audio = _small_inputs(b=1, f=2)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(sample, 501, audio).sample.square().mean().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    checkpointed = grads()
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing
    assert plain.keys() == checkpointed.keys() and len(plain) > 1000
    for k in plain:
        torch.testing.assert_close(checkpointed[k], plain[k], rtol=1e-4, atol=1e-6)


def test_attention_splits_very_large_batches(monkeypatch):
    """Batches above the CUDA grid limit are attended in pieces with the same result."""
    from latentsync.models import attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(10, 6, 16, generator=gen) for _ in range(3))
    whole = attention.multi_head_attention(q, k, v, heads=4)
    monkeypatch.setattr(attention, "_MAX_SDPA_BATCH", 3)
    torch.testing.assert_close(attention.multi_head_attention(q, k, v, heads=4), whole, rtol=0, atol=1e-6)
