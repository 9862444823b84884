"""StableSyncNet structure and behaviour (spec 2.6, Appendix A.2)."""

from __future__ import annotations

import pytest
import torch

from conftest import FIXTURES, load_fixture_json
from latentsync.config import syncnet_model_config
from latentsync.errors import InvalidInputError
from latentsync.models.syncnet import (
    StableSyncNet,
    SyncNetResnetBlock,
    _downsample_padding,
    sync_loss,
    syncnet_similarity,
)


def _read_tsv(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = (FIXTURES / name).read_text().splitlines()[1:]
    out = []
    for row in rows:
        key, shape, _ = row.split("\t")
        out.append((key, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return out


def test_full_size_keys_and_shapes_match_official_list():
    with torch.device("meta"):
        model = StableSyncNet(syncnet_model_config("syncnet_16_pixel_attn"))
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    expected = _read_tsv("syncnet_keys_16_pixel_attn.tsv")
    assert len(expected) == 266
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == 401_306_080


def test_tiny_key_set_equals_official_key_set():
    model = StableSyncNet(load_fixture_json("tiny_syncnet_config.json"))
    assert list(model.state_dict()) == [k for k, _ in _read_tsv("syncnet_keys_16_pixel_attn.tsv")]


def test_outputs_are_nonnegative_unit_vectors_and_depend_on_frame_order():
    torch.manual_seed(0)
    model = StableSyncNet(load_fixture_json("tiny_syncnet_config.json"))
    images = torch.rand(1, 48, 128, 256) * 2 - 1
    swapped = images.view(1, 16, 3, 128, 256).flip(1).reshape(1, 48, 128, 256)
    images = torch.cat([images, swapped])
    mel = (torch.rand(1, 1, 80, 52) * 8 - 4).expand(2, -1, -1, -1)
    with torch.no_grad():
        vis, aud = model.forward_features(images, mel)
        v, a = model(images, mel)
    # same downsample factors as the real model: both towers end at C x 1 x 1
    assert vis.shape == (2, 64, 1, 1) and aud.shape == (2, 64, 1, 1)
    assert v.shape == (2, 64) and a.shape == (2, 64)
    assert torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(a.norm(dim=1), torch.ones(2), atol=1e-5)
    assert (v >= 0).all() and (a >= 0).all()
    sim = syncnet_similarity(v, a)
    assert sim.shape == (2,) and ((sim >= 0) & (sim <= 1 + 1e-6)).all()
    torch.testing.assert_close(a[0], a[1], atol=1e-6, rtol=0)  # same audio, batch items independent
    assert (v[0] - v[1]).abs().max() > 1e-4  # frame order (channel = 3 * frame + rgb) matters


@pytest.mark.parametrize(
    "factor, pad",
    [(2, (0, 1, 0, 1)), ((1, 2), (0, 1, 1, 1)), ((2, 1), (1, 1, 0, 1)), ((2, 3), (0, 1, 0, 1))],
)
def test_downsample_padding(factor, pad):
    assert _downsample_padding(factor) == pad


@pytest.mark.parametrize(
    "factor, size_in, size_out",
    [(2, (8, 8), (4, 4)), ([1, 2], (8, 16), (8, 8)), ([2, 1], (80, 52), (40, 52)), ([2, 3], (2, 3), (1, 1)), (1, (5, 6), (5, 6))],
)
def test_resnet_block_downsampling_sizes(factor, size_in, size_out):
    block = SyncNetResnetBlock(32, 64, factor)
    y = block(torch.randn(1, 32, *size_in))
    assert y.shape == (1, 64, *size_out)
    assert (block.downsample_conv is None) == (factor == 1)


_SMALL = {
    "audio_encoder": {"in_channels": 1, "block_out_channels": [32, 64, 64], "downsample_factors": [[2, 1], 2, 2],
                      "attn_blocks": [0, 1, 0], "dropout": 0.0},
    "visual_encoder": {"in_channels": 6, "block_out_channels": [32, 32, 64], "downsample_factors": [[1, 2], 2, 2],
                       "attn_blocks": [1, 0, 0], "dropout": 0.0},
}


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = StableSyncNet(_SMALL).train()
    images = torch.rand(2, 6, 4, 8) * 2 - 1
    mel = torch.rand(2, 1, 8, 4) * 8 - 4

    def grads():
        model.zero_grad()
        loss = sync_loss(*model(images, mel), torch.tensor([1.0, 0.0]))
        loss.backward()
        return loss.detach(), model.visual_encoder.conv_in.weight.grad.clone()

    l1, g1 = grads()
    model.enable_gradient_checkpointing()
    l2, g2 = grads()
    assert torch.allclose(l1, l2) and torch.allclose(g1, g2, atol=1e-6)
    assert g1.abs().sum() > 0


def test_sync_loss_matches_bce():
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    a = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    cos = torch.tensor([0.6, 1.0])
    y = torch.tensor([1.0, 0.0])
    expected = torch.nn.functional.binary_cross_entropy(cos, y)  # log(0) clamps to -100
    torch.testing.assert_close(sync_loss(v, a, y), expected)
    torch.testing.assert_close(sync_loss(v[:1], a[:1]), -torch.log(torch.tensor(0.6)))


def test_bad_configs_raise():
    cfg = load_fixture_json("tiny_syncnet_config.json")
    with pytest.raises(InvalidInputError, match="visual_encoder"):
        StableSyncNet({"audio_encoder": cfg["audio_encoder"]})
    bad = load_fixture_json("tiny_syncnet_config.json")
    bad["audio_encoder"]["attn_blocks"] = [0, 1]
    with pytest.raises(InvalidInputError, match="same length"):
        StableSyncNet(bad)
    bad = load_fixture_json("tiny_syncnet_config.json")
    bad["visual_encoder"]["block_out_channels"][0] = 40
    with pytest.raises(InvalidInputError, match="multiple of 32"):
        StableSyncNet(bad)


def test_accepts_full_yaml_dict():
    with torch.device("meta"):
        from latentsync.config import load_syncnet_config

        model = StableSyncNet(load_syncnet_config("syncnet_16_pixel_attn"))
    assert len(model.state_dict()) == 266
