"""latentsync.vae: loading (folder / single file, diffusers and LDM key layouts), scaled encode/decode."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from latentsync.errors import CheckpointError, InvalidInputError, MissingWeightsError
from latentsync.models.tiny import write_tiny_vae
from latentsync.vae import VAE_SCALING_FACTOR, decode_latents, encode_frames, load_vae


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return write_tiny_vae(tmp_path_factory.mktemp("vae") / "sd-vae-ft-mse", seed=3)


@pytest.fixture(scope="module")
def vae(vae_dir):
    return load_vae(vae_dir)


def _to_ldm(sd: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> original LDM ``first_stage_model`` keys (test helper)."""
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for key, value in sd.items():
        k = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        parts = k.split(".")
        if parts[1] == "down_blocks":
            if parts[3] == "resnets":
                k = f"{parts[0]}.down.{parts[2]}.block.{'.'.join(parts[4:])}"
            else:  # downsamplers.0.conv.*
                k = f"{parts[0]}.down.{parts[2]}.downsample.{'.'.join(parts[5:])}"
        elif parts[1] == "up_blocks":
            j = n_blocks - 1 - int(parts[2])
            if parts[3] == "resnets":
                k = f"{parts[0]}.up.{j}.block.{'.'.join(parts[4:])}"
            else:
                k = f"{parts[0]}.up.{j}.upsample.{'.'.join(parts[5:])}"
        elif parts[1] == "mid_block" and parts[2] == "resnets":
            k = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
        elif parts[1] == "mid_block" and parts[2] == "attentions":
            rest = ".".join(parts[4:])
            for new, old in attn.items():
                if rest.startswith(new + "."):
                    rest = old + rest[len(new):]
                    break
            k = f"{parts[0]}.mid.attn_1.{rest}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + k] = value
    return out


def test_folder_load_sets_constant_scaling(vae):
    assert VAE_SCALING_FACTOR == 0.18215
    assert vae.config.scaling_factor == VAE_SCALING_FACTOR
    assert not vae.training
    assert all(not p.requires_grad for p in vae.parameters())


def test_single_file_diffusers_and_ldm_layouts(vae, tmp_path):
    sd = {k: v.clone() for k, v in vae.state_dict().items()}
    flat = tmp_path / "vae.safetensors"
    save_file(sd, str(flat))
    v1 = load_vae(flat)
    ldm = tmp_path / "vae-ldm.safetensors"
    save_file(_to_ldm(sd, len(vae.config.block_out_channels)), str(ldm))
    v2 = load_vae(ldm)
    for other in (v1, v2):
        assert list(other.config.block_out_channels) == list(vae.config.block_out_channels)
        got = other.state_dict()
        assert set(got) == set(sd)
        for k in sd:
            assert torch.equal(got[k], sd[k]), k


def test_encode_is_scaled_posterior_sample(vae):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = encode_frames(vae, x, torch.Generator().manual_seed(5), batch_size=2)
    assert z.shape == (3, 4, 8, 8)
    with torch.no_grad():
        post = vae.encode(x).latent_dist
        expected = post.sample(generator=torch.Generator().manual_seed(5)) * 0.18215
        mean = post.mean * 0.18215
    assert torch.allclose(z, expected, atol=1e-6)
    assert not torch.allclose(z, mean, atol=1e-4)  # a random sample, not the mean
    # same seed -> same latents, whatever the batch size
    z1 = encode_frames(vae, x, torch.Generator().manual_seed(5), batch_size=1)
    assert torch.allclose(z, z1, atol=1e-6)
    z3 = encode_frames(vae, x, torch.Generator().manual_seed(6), batch_size=3)
    assert not torch.allclose(z, z3)


def test_decode_divides_by_scaling(vae):
    z = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x = decode_latents(vae, z, batch_size=2)
    assert x.shape == (5, 3, 64, 64)
    with torch.no_grad():
        expected = vae.decode(z / 0.18215).sample
    assert torch.allclose(x, expected, atol=1e-5)


def test_bad_inputs(vae, tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_vae(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_vae(empty)
    junk = tmp_path / "junk.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(junk))
    with pytest.raises(CheckpointError, match="not an autoencoder"):
        load_vae(junk)
    with pytest.raises(InvalidInputError, match=r"\[N, 3, H, W\]"):
        encode_frames(vae, torch.zeros(1, 3, 60, 64))
    with pytest.raises(InvalidInputError, match="latents"):
        decode_latents(vae, torch.zeros(1, 3, 8, 8))


def test_channels_last_vae_gives_the_same_latents_and_images(vae):
    import copy

    from latentsync.device import prepare_models

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    nhwc = copy.deepcopy(vae)
    prepare_models(torch.nn.Identity(), nhwc, torch.device("cpu"), channels_last=True)
    assert nhwc.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    z = encode_frames(vae, x, torch.Generator().manual_seed(5))
    z_nhwc = encode_frames(nhwc, x, torch.Generator().manual_seed(5))
    assert torch.allclose(z, z_nhwc, atol=1e-5)
    assert torch.allclose(decode_latents(vae, z), decode_latents(nhwc, z), atol=1e-5)


def test_auto_batch_size_follows_free_cuda_memory(monkeypatch):
    from latentsync.vae import DEFAULT_BATCH_SIZE, MAX_AUTO_BATCH_SIZE, auto_batch_size

    assert auto_batch_size("cpu", 512) == DEFAULT_BATCH_SIZE == 16  # the official chunk
    gib = 1 << 30
    free = {"bytes": 8 * gib}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * gib))
    assert auto_batch_size("cuda", 512, torch.float16) == 8  # half of 8 GiB / 512 MiB per face
    assert auto_batch_size("cuda", 512, torch.float32) == 4
    assert auto_batch_size("cuda", 256, torch.bfloat16) == MAX_AUTO_BATCH_SIZE
    free["bytes"] = gib // 4
    assert auto_batch_size("cuda", 512, torch.float16) == 1
