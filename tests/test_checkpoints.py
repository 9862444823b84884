"""Weight-file reading, kind detection, strict loading and official-format saving (spec 2.5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import FIXTURES
from latentsync import checkpoints as ck
from latentsync.errors import CheckpointError, MissingWeightsError
from latentsync.models import tiny


def _tsv_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Meta tensors with the official keys and shapes (no memory)."""
    out = {}
    for row in (FIXTURES / name).read_text().splitlines()[1:]:
        key, shape, _ = row.split("\t")
        out[key] = torch.empty(tuple(int(s) for s in shape.split(",")), device="meta")
    return out


@pytest.fixture(scope="module")
def tiny_unet():
    return tiny.build_tiny_unet(seed=0)


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory, tiny_unet):
    path = tmp_path_factory.mktemp("unet") / "latentsync_unet.pt"
    ck.save_official_checkpoint(tiny_unet, path, global_step=1234)
    return path


def _inputs():
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 13, 2, 16, 16, generator=g)
    audio = torch.randn(2, 50, 384, generator=g)
    return sample, torch.tensor(501), audio


# ---------------------------------------------------------------------------------------- reading


def test_official_pt_roundtrip_gives_identical_outputs(unet_file, tiny_unet):
    raw = torch.load(unet_file, weights_only=True)
    assert set(raw) == {"global_step", "state_dict"} and raw["global_step"] == 1234
    assert list(raw["state_dict"]) == list(tiny_unet.state_dict())
    unet = ck.load_unet(unet_file, tiny.tiny_unet_config())
    assert unet.checkpoint_global_step == 1234
    assert not unet.training
    sample, t, audio = _inputs()
    with torch.no_grad():
        expected = tiny_unet(sample, t, encoder_hidden_states=audio).sample
        got = unet(sample, t, encoder_hidden_states=audio).sample
    assert torch.equal(expected, got)
    got_sd = unet.state_dict()
    for key, value in tiny_unet.state_dict().items():
        assert torch.equal(got_sd[key], value), key


def test_safetensors_and_bare_state_dict_are_read(tmp_path, tiny_unet):
    sd = tiny_unet.state_dict()
    st = tmp_path / "unet.weights"  # format is sniffed, not taken from the suffix
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    bare = tmp_path / "bare.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, bare)  # DDP prefix is stripped
    for path in (st, bare):
        got = ck.load_state_dict_file(path)
        assert list(got) == list(sd) or set(got) == set(sd)
        assert all(torch.equal(got[k], sd[k]) for k in sd)
        assert ck.read_checkpoint(path).kind == ck.UNET_STAGE2


def test_legacy_pickle_format_is_read(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"state_dict": {"audio_encoder.conv_in.weight": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(ck.load_state_dict_file(path)["audio_encoder.conv_in.weight"], torch.ones(2))


def test_v10_keys_are_renamed(tmp_path):
    sd = {
        "conv_in.weight": torch.zeros(4, 13, 3, 3),
        "down_blocks.0.attentions.0.transformer_blocks.0.audio_cross_attn.attn.to_q.weight": torch.ones(2, 2),
        "down_blocks.0.attentions.0.transformer_blocks.0.audio_cross_attn.norm.weight": torch.ones(2),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": torch.ones(2, 2),
    }
    path = tmp_path / "v10.pt"
    torch.save({"global_step": 5, "state_dict": sd}, path)
    ckpt = ck.read_checkpoint(path)
    assert ckpt.kind == ck.UNET_V10 and ckpt.global_step == 5
    assert list(ckpt.state_dict) == [
        "conv_in.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.norm2.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    ]


def test_v10_checkpoint_loads_into_a_model_without_motion_modules(tmp_path, tiny_unet):
    cfg = tiny.tiny_unet_config()
    cfg["use_motion_module"] = False
    sd = {k: v for k, v in tiny_unet.state_dict().items() if ".motion_modules." not in k}
    old = {k.replace(".attn2.", ".audio_cross_attn.attn.").replace(".norm2.", ".audio_cross_attn.norm.")
           if ".transformer_blocks.0." in k and ".motion_modules." not in k else k: v for k, v in sd.items()}
    assert sum(".audio_cross_attn." in k for k in old) == 16 * 7  # to_q/k/v, to_out.0 w+b, norm w+b
    path = tmp_path / "v10.pt"
    ck.save_official_checkpoint(old, path)
    unet = ck.load_unet(path, cfg)
    got = unet.state_dict()
    assert set(got) == set(sd) and all(torch.equal(got[k], v) for k, v in sd.items())


# ---------------------------------------------------------------------------------------- detection


def test_detect_kind_of_official_key_sets():
    stage2 = _tsv_state_dict("unet_keys_stage2_512.tsv")
    assert ck.detect_kind(stage2) == ck.UNET_STAGE2
    stage1 = {k: v for k, v in stage2.items() if ".motion_modules." not in k}
    assert len(stage1) == 686
    assert ck.detect_kind(stage1) == ck.UNET_STAGE1
    efficient = {k: v for k, v in stage2.items() if not (k.startswith("down_blocks.") and ".motion_modules." in k)}
    assert len(efficient) == 1022
    assert ck.detect_kind(efficient) == ck.UNET_STAGE2_EFFICIENT
    sd15 = dict(stage1)
    sd15["conv_in.weight"] = torch.empty(320, 4, 3, 3, device="meta")
    assert ck.detect_kind(sd15) == ck.SD_UNET
    assert ck.detect_kind(_tsv_state_dict("syncnet_keys_16_pixel_attn.tsv")) == ck.SYNCNET
    assert ck.detect_kind({"encoder.conv1.weight": 0, "encoder.blocks.0.attn.query.weight": 0}) == ck.WHISPER
    assert ck.detect_kind({"encoder.conv_in.weight": 0, "decoder.conv_in.weight": 0, "quant_conv.weight": 0}) == ck.VAE
    assert ck.detect_kind({"model.diffusion_model.input_blocks.0.0.weight": 0}) == ck.SD_LDM
    assert ck.detect_kind({"foo.weight": 0}) == ck.UNKNOWN


def test_infer_unet_config(tmp_path):
    from latentsync.config import load_unet_config, unet_model_config

    stage2 = _tsv_state_dict("unet_keys_stage2_512.tsv")
    ckpt = ck.CheckpointFile(tmp_path / "x.pt", stage2, ck.detect_kind(stage2))
    assert ck.infer_unet_config(ckpt) == unet_model_config(512)
    assert ck.infer_unet_config(ckpt, resolution=256) == unet_model_config(256)
    stage1 = {k: v for k, v in stage2.items() if ".motion_modules." not in k}
    cfg = ck.infer_unet_config(ck.CheckpointFile(tmp_path / "x.pt", stage1, ck.detect_kind(stage1)))
    assert cfg["use_motion_module"] is False
    eff = {k: v for k, v in stage2.items() if not (k.startswith("down_blocks.") and ".motion_modules." in k)}
    cfg = ck.infer_unet_config(ck.CheckpointFile(tmp_path / "x.pt", eff, ck.detect_kind(eff)))
    assert cfg == load_unet_config("stage2_efficient")["model"] and cfg["motion_module_decoder_only"] is True


def test_full_size_official_keys_fit_the_bundled_config_on_meta():
    from latentsync.config import unet_model_config
    from latentsync.models.unet import UNet3DConditionModel

    with torch.device("meta"):
        model = UNet3DConditionModel.from_config(unet_model_config(512))
    _, report, wrong = ck._compare(ck._model_shapes(model), _tsv_state_dict("unet_keys_stage2_512.tsv"), False)
    assert wrong == [] and report.missing == [] and report.unexpected == []


def test_config_marker_next_to_checkpoint_is_used(tmp_path, tiny_unet):
    path = tiny.write_tiny_unet_checkpoint(tmp_path / "latentsync_unet.pt")
    assert ck.config_next_to(path) == tmp_path / "latentsync_unet.yaml"
    unet = ck.load_unet(path)  # no config: the marker gives the tiny config
    assert unet.config["block_out_channels"] == [32, 64, 96, 96]
    # without the marker the default (full-size 1.6) config is inferred and does not fit
    (tmp_path / "latentsync_unet.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"(?s)wrong shapes.*conv_in.weight \(32, 13, 3, 3\) vs \(320, 13, 3, 3\)"):
        ck.load_unet(path)


# ---------------------------------------------------------------------------------------- errors


def _raises(path, match, exc=CheckpointError, loader=ck.load_state_dict_file):
    with pytest.raises(exc, match=match) as info:
        loader(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.pt", "not found", MissingWeightsError)
    _raises(tmp_path / "nope.pt", "not found", MissingWeightsError, ck.load_unet)


def test_empty_folder_and_text_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    _raises(tmp_path / "empty.pt", "empty")
    _raises(tmp_path, "is a folder")
    (tmp_path / "page.pt").write_text("<!DOCTYPE html><html>401 Unauthorized</html>")
    _raises(tmp_path / "page.pt", "text file.*failed download")
    (tmp_path / "lfs.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 5\n")
    _raises(tmp_path / "lfs.pt", "Git LFS pointer")
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)) * 4)
    _raises(tmp_path / "junk.pt", "not a PyTorch checkpoint")


def test_truncated_files(tmp_path, unet_file):
    data = unet_file.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _raises(tmp_path / "cut.pt", "truncated or corrupt")
    legacy = tmp_path / "legacy.pt"
    torch.save({"state_dict": {"a.weight": torch.ones(100)}}, legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "legacy_cut.pt").write_bytes(legacy.read_bytes()[:-50])
    _raises(tmp_path / "legacy_cut.pt", "truncated or corrupt")
    st = tmp_path / "w.safetensors"
    save_file({"a.weight": torch.ones(1000)}, str(st))
    (tmp_path / "cut.safetensors").write_bytes(st.read_bytes()[:200])
    _raises(tmp_path / "cut.safetensors", "corrupt or truncated safetensors")


class _Arbitrary:
    pass


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"state_dict": {"a": torch.ones(1)}, "obj": _Arbitrary()}, path)
    _raises(path, "other than tensors")


def test_missing_state_dict_entry(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weights": {"a.weight": torch.ones(1)}, "epoch": 3}, path)
    msg = _raises(path, "no state dict")
    assert "'weights'" in msg and "'epoch'" in msg and "'state_dict'" in msg
    torch.save({"state_dict": [1, 2]}, path)
    _raises(path, "no state dict")
    torch.save({"model": {"state_dict": {"a.weight": [1]}}}, path)
    _raises(path, r"looked in \['model'\]\['state_dict'\]")


def test_syncnet_checkpoint_given_as_unet(tmp_path):
    path = tiny.write_tiny_syncnet_checkpoint(tmp_path / "stable_syncnet.pt")
    msg = _raises(path, "looks like a StableSyncNet", loader=ck.load_unet)
    assert "not a LatentSync U-Net" in msg


def test_whisper_and_vae_given_as_unet(tmp_path):
    wpath = tmp_path / "tiny.pt"
    torch.save({"dims": {"n_mels": 80}, "model_state_dict": {"encoder.conv1.weight": torch.ones(1)}}, wpath)
    _raises(wpath, "looks like an OpenAI Whisper", loader=ck.load_unet)
    vpath = tmp_path / "vae.safetensors"
    save_file({"encoder.conv_in.weight": torch.ones(1), "decoder.conv_in.weight": torch.ones(1),
               "quant_conv.weight": torch.ones(1)}, str(vpath))
    _raises(vpath, "looks like a VAE", loader=ck.load_unet)


def test_wrong_shapes_name_keys_and_shapes(tmp_path, tiny_unet):
    sd = dict(tiny_unet.state_dict())
    sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(32, 768)
    path = tmp_path / "bad.pt"
    ck.save_official_checkpoint(sd, path)
    msg = _raises(path, "wrong shapes", loader=lambda p: ck.load_unet(p, tiny.tiny_unet_config()))
    assert "attn2.to_k.weight (32, 768) vs (32, 384)" in msg
    assert "looks like a LatentSync 1.5/1.6 U-Net with motion modules" in msg
    # allow_partial drops the text-width to_k (SD-1.5 initialisation) and keeps the fresh one
    unet = ck.load_unet(path, tiny.tiny_unet_config(), allow_partial=True)
    assert unet.load_report.dropped == ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"]


def test_motion_modules_the_config_lacks_are_an_error(tmp_path, unet_file):
    cfg = tiny.tiny_unet_config()
    cfg["use_motion_module"] = False  # a stage-2 file under a stage-1 config
    msg = _raises(unet_file, "unexpected in the file", loader=lambda p: ck.load_unet(p, cfg))
    assert "motion_modules" in msg and "use_motion_module" in msg
    cfg = tiny.tiny_unet_config()
    cfg["motion_module_decoder_only"] = True  # stage2_efficient: motion modules of the down blocks left over
    _raises(unet_file, r"(?s)unexpected in the file.*down_blocks\.0\.motion_modules", loader=lambda p: ck.load_unet(p, cfg))
    unet = ck.load_unet(unet_file, cfg, allow_partial=True)  # training may drop them on purpose
    assert unet.load_report.unexpected and all(k.startswith("down_blocks.") for k in unet.load_report.unexpected)


def test_stage1_checkpoint_into_stage2_model(tmp_path, tiny_unet):
    sd = {k: v for k, v in tiny_unet.state_dict().items() if ".motion_modules." not in k}
    path = tmp_path / "stage1.pt"
    ck.save_official_checkpoint(sd, path, global_step=7)
    assert ck.read_checkpoint(path).kind == ck.UNET_STAGE1
    msg = _raises(path, "missing from the file", loader=lambda p: ck.load_unet(p, tiny.tiny_unet_config()))
    assert "allow_partial=True" in msg and "motion_modules" in msg
    torch.manual_seed(0)
    unet = ck.load_unet(path, tiny.tiny_unet_config(), allow_partial=True)
    assert all(".motion_modules." in k for k in unet.load_report.missing) and unet.load_report.missing
    # loaded weights arrived; motion-module proj_out is freshly zero-initialised (identity module)
    key = "down_blocks.0.resnets.0.conv1.weight"
    assert torch.equal(unet.state_dict()[key], sd[key])
    proj = [v for k, v in unet.state_dict().items() if k.endswith("temporal_transformer.proj_out.weight")]
    assert proj and all(torch.all(p == 0) for p in proj)
    # the same file fits a stage-1 config strictly
    cfg = tiny.tiny_unet_config()
    cfg["use_motion_module"] = False
    assert ck.load_unet(path, cfg).load_report.missing == []


def test_sd_style_conv_in_is_dropped_only_when_partial(tmp_path, tiny_unet):
    sd = dict(tiny_unet.state_dict())
    sd["conv_in.weight"] = torch.ones(32, 4, 3, 3)
    sd["conv_out.weight"] = torch.ones(8, 32, 3, 3)
    sd["conv_out.bias"] = torch.ones(8)
    path = tmp_path / "sd.pt"
    ck.save_official_checkpoint(sd, path)
    msg = _raises(path, "wrong shapes", loader=lambda p: ck.load_unet(p, tiny.tiny_unet_config()))
    assert "conv_in.weight (32, 4, 3, 3) vs (32, 13, 3, 3)" in msg
    unet = ck.load_unet(path, tiny.tiny_unet_config(), allow_partial=True)
    assert set(unet.load_report.dropped) == {"conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias"}
    assert torch.all(unet.conv_in.weight == 0) and torch.all(unet.conv_out.weight == 0)  # fresh zero init


def test_missing_pe_buffers_are_recomputed(tmp_path, tiny_unet):
    sd = {k: v for k, v in tiny_unet.state_dict().items() if not k.endswith(".pos_encoder.pe")}
    assert len(sd) == 1246 - 40
    path = tmp_path / "nope.pt"
    ck.save_official_checkpoint(sd, path)
    got_sd = ck.load_unet(path, tiny.tiny_unet_config()).state_dict()
    for key, value in tiny_unet.state_dict().items():
        assert torch.equal(got_sd[key], value), key


def test_load_unet_dtype_and_config_forms(unet_file, tmp_path):
    unet = ck.load_unet(unet_file, {"model": tiny.tiny_unet_config()}, dtype=torch.float16)
    assert unet.conv_in.weight.dtype == torch.float16
    assert all(v.dtype == torch.float16 for v in unet.state_dict().values())
    yaml_path = tmp_path / "cfg.yaml"
    yaml_path.write_text("model:\n" + "".join(f"  {k}: {v!r}\n".replace("True", "true").replace("False", "false")
                                              for k, v in tiny.tiny_unet_config().items() if not isinstance(v, dict)))
    assert ck.load_unet(unet_file, yaml_path).config["block_out_channels"] == [32, 64, 96, 96]
    with pytest.raises(CheckpointError, match="wrong shapes"):
        ck.load_unet(unet_file, "stage2_512")  # bundled full-size config by name


# ---------------------------------------------------------------------------------------- syncnet / whisper


def test_load_syncnet_strict(tmp_path):
    path = tiny.write_tiny_syncnet_checkpoint(tmp_path / "stable_syncnet.pt")
    model = ck.load_syncnet(path)  # marker beside the file
    got_sd = model.state_dict()
    assert all(torch.equal(got_sd[k], v) for k, v in tiny.build_tiny_syncnet(0).state_dict().items())
    raw = torch.load(path, weights_only=True)
    assert {"state_dict", "global_step", "train_step_list", "val_loss_list"} <= set(raw)
    # the full-size config does not fit the tiny weights
    with pytest.raises(CheckpointError, match=r"(?s)SyncNet checkpoint .*wrong shapes"):
        ck.load_syncnet(path, "syncnet_16_pixel_attn")
    unet_path = tmp_path / "latentsync_unet.pt"
    ck.save_official_checkpoint({"conv_in.weight": torch.zeros(1, 13, 3, 3)}, unet_path)
    with pytest.raises(CheckpointError, match="looks like a LatentSync"):
        ck.load_syncnet(unet_path)


def test_load_whisper_errors_never_download(tmp_path, monkeypatch):
    import whisper

    def no_download(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("network access attempted")

    monkeypatch.setattr(whisper, "_download", no_download)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingWeightsError, match="not found"):
        ck.load_whisper("tiny")  # a model *name* is a missing file here, not a download
    with pytest.raises(MissingWeightsError, match="not found"):
        ck.load_whisper(tmp_path / "whisper" / "tiny.pt")
    sync = tiny.write_tiny_syncnet_checkpoint(tmp_path / "stable_syncnet.pt")
    with pytest.raises(CheckpointError, match="looks like a StableSyncNet"):
        ck.load_whisper(sync)
    bad = tmp_path / "bad_whisper.pt"
    dims = tiny.tiny_whisper_dims()
    torch.save({"dims": dims, "model_state_dict": {"encoder.conv1.weight": torch.zeros(384, 80, 3)}}, bad)
    with pytest.raises(CheckpointError, match="missing from the file"):
        ck.load_whisper(bad)


# ---------------------------------------------------------------------------------------- saving


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    ck.save_official_checkpoint({"a.weight": torch.ones(2)}, path, global_step=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_official_checkpoint({"a.weight": torch.zeros(2)}, path, global_step=2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_save_unwraps_and_writes_extra(tmp_path):
    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    inner = torch.nn.Linear(2, 3)
    path = ck.save_official_checkpoint(Wrapper(inner), tmp_path / "sub" / "x.pt", global_step=9, train_loss_list=[0.5])
    raw = torch.load(path, weights_only=True)
    assert raw["global_step"] == 9 and raw["train_loss_list"] == [0.5]
    assert set(raw["state_dict"]) == {"weight", "bias"}
    st = ck.save_official_checkpoint(inner, tmp_path / "x.safetensors", global_step=3)
    assert set(ck.load_state_dict_file(st)) == {"weight", "bias"}


# ---------------------------------------------------------------------------------------- bundled configs


@pytest.mark.parametrize(
    "name, resolution, entries",
    [("stage1", 256, 686), ("stage1_512", 512, 686), ("stage2", 256, 1246), ("stage2_512", 512, 1246),
     ("stage2_efficient", 256, 1022)],
)
def test_bundled_unet_configs_build_with_official_key_counts(name, resolution, entries):
    from latentsync.config import load_unet_config
    from latentsync.models.unet import UNet3DConditionModel

    cfg = load_unet_config(name)
    assert {"data", "ckpt", "run", "optimizer", "model"} <= set(cfg)
    assert cfg["data"]["resolution"] == resolution and cfg["data"]["num_frames"] == 16
    assert cfg["optimizer"]["lr"] == pytest.approx(1e-5) and isinstance(cfg["model"]["norm_eps"], float)
    with torch.device("meta"):
        model = UNet3DConditionModel.from_config(cfg["model"])
    assert len(model.state_dict()) == entries


def test_config_helpers(tmp_path):
    import json

    from latentsync.config import load_unet_config, scheduler_config, unet_model_config
    from latentsync.errors import InvalidInputError

    assert unet_model_config(256) == unet_model_config(512)
    assert load_unet_config("stage2_512.yaml") == load_unet_config("unet/stage2_512.yaml")
    assert scheduler_config() == json.loads((FIXTURES / "scheduler_config.json").read_text())
    with pytest.raises(InvalidInputError, match="256.*512"):
        unet_model_config(384)
    with pytest.raises(InvalidInputError, match="bundled"):
        load_unet_config("stage9")
    own = tmp_path / "mine.yaml"
    own.write_text("data: {resolution: 256}\n")
    with pytest.raises(InvalidInputError, match="no `model:` section"):
        load_unet_config(own)


# ---------------------------------------------------------------------------------------- re-packed forms
# Every form a user may hold of the published U-Net, built from the tiny random model: the loaded model
# must give the canonical file's outputs (bit for bit; fp16 / bf16 files: those of the canonical
# weights rounded to that dtype, which is within that dtype's rounding of the canonical output).


@pytest.fixture(scope="module")
def canonical_output(tiny_unet):
    sample, t, audio = _inputs()
    with torch.no_grad():
        return tiny_unet(sample, t, encoder_hidden_states=audio).sample


def _output_of(path, **kwargs):
    sample, t, audio = _inputs()
    unet = ck.load_unet(path, tiny.tiny_unet_config(), **kwargs)
    with torch.no_grad():
        return unet, unet(sample, t, encoder_hidden_states=audio).sample


def _save(obj, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".safetensors"])
def test_every_extension_with_the_same_content_loads_the_same(tmp_path, tiny_unet, canonical_output, suffix):
    sd = tiny_unet.state_dict()
    path = _save(dict(sd) if suffix == ".safetensors" else {"global_step": 5, "state_dict": dict(sd)},
                 tmp_path / f"renamed_unet{suffix}")
    unet, out = _output_of(path)
    assert torch.equal(out, canonical_output)
    assert unet.load_report.unexpected == [] and unet.load_report.missing == []


@pytest.mark.parametrize(
    "name, wrap",
    [
        ("nested_state_dict.ckpt", lambda sd: {"state_dict": {"state_dict": sd, "global_step": 3}, "epoch": 1}),
        ("model_entry.pth", lambda sd: {"model": sd, "optimizer": {"lr": 1e-5}}),
        ("model_then_state_dict.pt", lambda sd: {"model": {"state_dict": sd}}),
        ("deepspeed.pt", lambda sd: {"module": sd, "global_step": 3}),
        ("ddp_compiled.pt", lambda sd: {"state_dict": {"module._orig_mod." + k: v for k, v in sd.items()}}),
        ("unet_prefix.pt", lambda sd: {"unet." + k: v for k, v in sd.items()}),
        ("model_prefix.safetensors", lambda sd: {"model." + k: v for k, v in sd.items()}),
    ],
)
def test_nested_and_prefixed_files_load_the_canonical_weights(tmp_path, tiny_unet, canonical_output, caplog, name, wrap):
    path = _save(wrap(dict(tiny_unet.state_dict())), tmp_path / name)
    with caplog.at_level("INFO", logger="latentsync.checkpoints"):
        unet, out = _output_of(path)
    assert torch.equal(out, canonical_output)
    if "prefix" in name or "ddp" in name:
        assert any("prefix is removed" in r.getMessage() for r in caplog.records)
    if name.startswith(("nested", "deepspeed")):
        assert unet.checkpoint_global_step == 3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_safetensors_with_a_comfyui_prefix_are_cast_to_the_inference_dtype(
        tmp_path, tiny_unet, canonical_output, dtype):
    sd = tiny_unet.state_dict()
    path = _save({"model.diffusion_model." + k: v.to(dtype) for k, v in sd.items()},
                 tmp_path / f"latentsync_unet_{str(dtype)[6:]}.safetensors")
    assert ck.read_checkpoint(path).kind == ck.UNET_STAGE2
    unet, out = _output_of(path)  # inference dtype float32
    assert all(v.dtype == torch.float32 for v in unet.state_dict().values())
    rounded = tiny.build_tiny_unet(seed=0)
    rounded.load_state_dict({k: v.to(dtype).float() for k, v in sd.items()})
    sample, t, audio = _inputs()
    with torch.no_grad():
        assert torch.equal(out, rounded(sample, t, encoder_hidden_states=audio).sample)
    eps = torch.finfo(dtype).eps
    err = (out - canonical_output).abs().max() / canonical_output.abs().max()
    assert err < 8 * eps, f"relative error {float(err):.2e} vs {dtype} eps {eps:.1e}"
    half = ck.load_unet(path, tiny.tiny_unet_config(), dtype=torch.float16)
    assert all(v.dtype == torch.float16 for v in half.state_dict().values())


def test_extra_keys_and_an_ema_duplicate_set_are_ignored_with_one_warning(tmp_path, tiny_unet, canonical_output, caplog):
    sd = dict(tiny_unet.state_dict())
    extra = {"ema." + k: v * 0.5 for k, v in sd.items()}  # an EMA copy beside the weights
    extra["betas"] = torch.linspace(0, 1, 1000)  # a leftover scheduler buffer
    extra["down_blocks.0.attentions.0.position_ids"] = torch.arange(77)  # a leftover module buffer
    path = _save({"global_step": 1, "state_dict": {**sd, **extra}}, tmp_path / "with_ema.pt")
    with caplog.at_level("WARNING", logger="latentsync.checkpoints"):
        unet, out = _output_of(path)
    assert torch.equal(out, canonical_output)  # the plain weights, as the official loader takes them
    assert sorted(unet.load_report.unexpected) == sorted(extra)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"{len(extra)} keys of the file are not part of the model" in warnings[0]
    assert f"... and {len(extra) - 5} more" in warnings[0] and str(path) in warnings[0]


def test_missing_keys_and_wrong_shapes_stay_errors_in_repacks(tmp_path, tiny_unet):
    sd = {"unet." + k: v.half() for k, v in tiny_unet.state_dict().items()}
    sd.pop("unet.up_blocks.3.resnets.2.conv2.weight")
    sd["unet.conv_out.bias"] = torch.zeros(5, dtype=torch.float16)
    path = _save(sd, tmp_path / "broken.safetensors")
    msg = _raises(path, "missing from the file", loader=lambda p: ck.load_unet(p, tiny.tiny_unet_config()))
    assert "up_blocks.3.resnets.2.conv2.weight" in msg and "conv_out.bias (5) vs (4)" in msg


@pytest.fixture(scope="module")
def wrong_models():
    """(file name, content, kind named in the refusal) of each other model a user may pick by mistake."""
    from diffusers import UNet2DConditionModel

    sd_unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4, norm_num_groups=16,
    )
    whisper_hf = {"model.encoder.conv1.weight": torch.ones(4, 80, 3), "model.encoder.embed_positions.weight": torch.ones(1500, 4),
                  "model.encoder.layers.0.self_attn.k_proj.weight": torch.ones(4, 4),
                  "model.decoder.embed_tokens.weight": torch.ones(10, 4)}  # transformers WhisperForConditionalGeneration names
    return [
        ("syncnet.safetensors", tiny.build_tiny_syncnet(0).state_dict(), "a StableSyncNet"),
        ("vae.safetensors", tiny.build_tiny_vae(0).state_dict(), "a VAE"),
        ("whisper.pt", tiny.build_tiny_whisper(0).state_dict(), "an OpenAI Whisper checkpoint"),
        ("sd_unet.safetensors", sd_unet.state_dict(), "a Stable Diffusion U-Net"),
        ("whisper_hf.safetensors", whisper_hf, "a Hugging Face transformers Whisper model"),
    ]


@pytest.mark.parametrize("prefix", ["", "module."])
def test_wrong_model_files_are_refused_naming_their_kind(tmp_path, wrong_models, prefix):
    for name, sd, kind in wrong_models:
        sd = {prefix + k: v for k, v in sd.items()}
        obj = {"dims": tiny.tiny_whisper_dims(), "model_state_dict": sd} if name == "whisper.pt" else sd
        path = _save(obj, tmp_path / name)
        msg = _raises(path, f"looks like {kind}", loader=ck.load_unet)
        assert "not a LatentSync U-Net" in msg, name
    _raises(tmp_path / "sd_unet.safetensors", "only initialise training", loader=ck.load_unet)


# ---------------------------------------------------------------------------------------- whisper forms


def _whisper_dims(**changes):
    return {**tiny.tiny_whisper_dims(), **changes}


def test_whisper_of_another_size_or_format_says_what_to_get(tmp_path):
    stub = {"encoder.conv1.weight": torch.zeros(1), "encoder.blocks.0.attn.query.weight": torch.zeros(1)}
    cases = {
        "base.pt": (_whisper_dims(n_audio_state=512, n_audio_layer=6, n_audio_head=8), "is Whisper base"),
        "tiny.en.pt": (_whisper_dims(n_vocab=51864), "is Whisper tiny.en"),
        "large-v3.pt": (_whisper_dims(n_audio_state=1280, n_audio_layer=32, n_mels=128, n_vocab=51866), "is Whisper large-v3"),
    }
    for name, (dims, what) in cases.items():
        path = tmp_path / name
        torch.save({"dims": dims, "model_state_dict": stub}, path)
        msg = _raises(path, what, loader=ck.load_whisper)
        assert "trained on Whisper tiny" in msg and "tiny.pt" in msg and "ByteDance/LatentSync-1.6" in msg
    for model, d_model, layers, size in (("openai/whisper-tiny", 384, 4, "tiny"), ("openai/whisper-base", 512, 6, "base")):
        folder = tmp_path / model.split("/")[1]
        folder.mkdir()
        (folder / "config.json").write_text(
            f'{{"model_type": "whisper", "d_model": {d_model}, "encoder_layers": {layers}, "num_mel_bins": 80, "vocab_size": 51865}}')
        _save({"model.encoder.embed_positions.weight": torch.zeros(1500, 4)}, folder / "model.safetensors")
        msg = _raises(folder, f"transformers Whisper folder \\(Whisper {size}, like {model}\\)", loader=ck.load_whisper)
        assert "tiny.pt" in msg and "ByteDance/LatentSync-1.6" in msg
        msg = _raises(folder / "model.safetensors", "looks like a Hugging Face transformers Whisper", loader=ck.load_whisper)
        assert "tiny.pt" in msg
    _raises(tmp_path / "base.pt", "is Whisper base", loader=lambda p: ck.load_whisper(p, encoder_width=768))
    _save(stub, tmp_path / "tiny.safetensors")
    _raises(tmp_path / "tiny.safetensors", "Whisper weights without their 'dims'.*tiny.pt", loader=ck.load_whisper)
    _raises(tmp_path, "folder without tiny.pt", loader=ck.load_whisper)


def test_whisper_folder_and_extra_keys(tmp_path, caplog):
    path = tiny.write_tiny_whisper_checkpoint(tmp_path / "checkpoints" / "whisper" / "tiny.pt")
    expected = tiny.build_tiny_whisper(0).state_dict()
    for where in (tmp_path / "checkpoints", tmp_path / "checkpoints" / "whisper"):
        got = ck.load_whisper(where).state_dict()
        assert all(torch.equal(got[k], v.half().float()) for k, v in expected.items() if k.startswith("encoder."))
    raw = torch.load(path, weights_only=True)
    raw["model_state_dict"]["encoder.leftover"] = torch.zeros(2)
    torch.save(raw, tmp_path / "extra.pt")
    with caplog.at_level("WARNING", logger="latentsync.checkpoints"):
        ck.load_whisper(tmp_path / "extra.pt")
    assert any("1 keys of the file are not part of the model" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------- 1.5 or 1.6


def test_detect_unet_resolution_reads_what_a_renamed_file_states(tmp_path, tiny_unet, caplog):
    sd = {k: v.contiguous() for k, v in list(tiny_unet.state_dict().items())[:3]}

    def write(rel, metadata=None):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(path), metadata=metadata)
        return path

    assert ck.detect_unet_resolution(write("a/latentsync_1.5_unet_fp16.safetensors")) == 256
    assert ck.detect_unet_resolution(write("a/LatentSync-v16.safetensors")) == 512
    assert ck.detect_unet_resolution(write("LatentSync-1.5/unet.safetensors")) == 256  # the folder says it
    assert ck.detect_unet_resolution(write("b/unet_fp16.safetensors", {"modelspec.resolution": "256x256"})) == 256
    assert ck.detect_unet_resolution(write("c/unet_bf16.safetensors", {"modelspec.title": "LatentSync 1.5"})) == 256
    assert ck.detect_unet_resolution(write("d/unet.safetensors", {"config": '{"data": {"resolution": 256}}'})) == 256
    marked = tiny.write_tiny_unet_checkpoint(tmp_path / "e" / "my_unet.pt")  # marker: data.resolution 256
    assert ck.detect_unet_resolution(marked) == 256
    with caplog.at_level("INFO", logger="latentsync.checkpoints"):
        assert ck.detect_unet_resolution(write("f/unet_fp16.safetensors", {"format": "pt"})) == 512
        assert ck.detect_unet_resolution(write("f/latentsync_1.5_512.safetensors"), default=256) == 256  # ambiguous
    assert "assuming 512 px" in caplog.records[0].getMessage()
