"""Training loops, engine, datasets and losses on tiny configs (CPU; spec 3).

The clips are synthetic (training.synthetic: 64x64 faces whose mouth follows the audio); every
auxiliary network is a tiny random one. Runs in roughly a minute on two busy cores.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT  # noqa: F401  (pytest pythonpath = repo root)
from training_helpers import synthetic_clips

from latentsync.errors import InvalidInputError
from training import engine
from training.datasets.common import collate_samples, list_videos
from training.datasets.syncnet import SyncNetDataset, pack_syncnet_frames, repeat_audio_embeds, unpair_batch
from training.datasets.unet import UNetDataset, load_mask_image
from training.losses import PerceptualLoss, TrepaLoss, embedding_spread, mixed_noise
from training.losses import syncnet_accuracy, syncnet_bce_loss

CONFIGS = REPO_ROOT / "training" / "configs"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return synthetic_clips(tmp_path_factory, "clips", num_videos=3, num_frames=56, seed=0)


@pytest.fixture(scope="module")
def embeds_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeds_cache")


def _sync_overrides(data_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [f"data.train_data_dir={data_dir}", f"data.train_output_dir={out}",
            f"run.max_train_steps={steps}", "run.validation_steps=0", *extra]


def _unet_overrides(data_dir: Path, out: Path, steps: int, cache: Path, *extra: str) -> list[str]:
    return [f"data.train_data_dir={data_dir}", f"data.train_output_dir={out}", f"run.max_train_steps={steps}",
            f"data.audio_embeds_cache_dir={cache}", "run.validation_steps=0", *extra]


# ----------------------------------------------------------------------------------------------
# engine


def test_batch_keys_cover_every_item_once_per_epoch_across_ranks():
    n, bs, world = 7, 2, 2
    seen = []
    for step in range(7):  # 7 steps * 2 ranks * 2 = 28 = 4 epochs
        for rank in range(world):
            seen += [k[0] for k in engine.batch_keys(step, rank, world, bs, n, seed=3)]
    for e in range(4):
        assert sorted(seen[e * n:(e + 1) * n]) == list(range(n))
    assert engine.batch_keys(5, 1, 2, 2, 7, 3) == engine.batch_keys(5, 1, 2, 2, 7, 3)
    assert engine.batch_keys(5, 1, 2, 2, 7, 3) != engine.batch_keys(5, 1, 2, 2, 7, 4)


def test_lr_schedules():
    assert engine.get_lr_multiplier(0, "constant", 0, 10) == 1.0
    assert engine.get_lr_multiplier(0, "constant", 4, 10) == 0.25
    assert engine.get_lr_multiplier(10, "cosine", 0, 10, 0.1) == pytest.approx(0.1)
    assert engine.get_lr_multiplier(5, "linear", 0, 10) == pytest.approx(0.5)
    with pytest.raises(InvalidInputError, match="lr_scheduler"):
        engine.get_lr_multiplier(0, "bogus", 0, 10)


def test_config_overrides_and_unknown_key():
    cfg = engine.load_config(CONFIGS / "tiny_syncnet.yaml", ["run.max_train_steps=7", "data.batch_size=3"])
    assert cfg.run.max_train_steps == 7 and cfg.data.batch_size == 3
    with pytest.raises(InvalidInputError, match="run.no_such_key"):
        engine.load_config(CONFIGS / "tiny_syncnet.yaml", ["run.no_such_key=1"])
    with pytest.raises(InvalidInputError, match="key=value"):
        engine.load_config(CONFIGS / "tiny_syncnet.yaml", ["run.seed"])


def test_official_configs_keep_official_keys():
    """Our training configs carry every key of the bundled copies of the official configs."""
    from omegaconf import OmegaConf

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k != "model":
                out |= keys(v, prefix + k + ".")
        return out

    for ours, theirs in [("stage1", "unet/stage1"), ("stage2", "unet/stage2"),
                         ("syncnet_16_pixel_attn", "syncnet/syncnet_16_pixel_attn")]:
        a = OmegaConf.to_container(engine.load_yaml(CONFIGS / f"{ours}.yaml"))
        b = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "latentsync" / "configs" / f"{theirs}.yaml"))
        assert keys(b) <= keys(a), keys(b) - keys(a)
        assert a["model"] == b["model"]


def test_load_yaml_base_layering(tmp_path):
    """``base:`` loads the named config first; the file's keys are merged on top; a bad base is an error."""
    (tmp_path / "parent.yaml").write_text("run: {seed: 1, lr: 2}\nmodel: {a: [1, 2]}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nrun: {seed: 5}\nmodel: {a: [3]}\n")
    cfg = engine.load_config(tmp_path / "child.yaml", ["run.lr=7"])
    assert "base" not in cfg
    assert cfg.run.seed == 5 and cfg.run.lr == 7 and list(cfg.model.a) == [3]
    assert engine.load_yaml(CONFIGS / "stage2.yaml").model.in_channels == 13
    (tmp_path / "bad.yaml").write_text("base: unet/no_such_config\n")
    with pytest.raises(InvalidInputError, match="no_such_config"):
        engine.load_yaml(tmp_path / "bad.yaml")


def test_atomic_save_leaves_no_temp(tmp_path):
    engine.atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


# ----------------------------------------------------------------------------------------------
# datasets


def test_syncnet_dataset_deterministic_and_labels(data_dir):
    ds = SyncNetDataset(list_videos("", data_dir), seed=5, resolution=64)
    a, b = ds[(1, 123)], ds[(1, 123)]
    assert torch.equal(a["frames"], b["frames"]) and a["y"] == b["y"] and a["start_idx"] == b["start_idx"]
    assert a["frames"].shape == (16, 3, 64, 64) and a["audio"].shape == (1, 80, 52)
    assert -1.0 <= float(a["frames"].min()) and float(a["frames"].max()) <= 1.0
    ys = [ds[(i % 3, i)]["y"] for i in range(24)]
    assert 0 < sum(ys) < 24  # both positives and negatives occur
    batch = collate_samples([a, b])
    assert pack_syncnet_frames(batch["frames"]).shape == (2, 48, 32, 64)
    cached = SyncNetDataset(list_videos("", data_dir), seed=5, resolution=64, frame_cache_mb=50)
    c = cached[(1, 123)]
    assert c["start_idx"] == a["start_idx"] and (c["frames"] - a["frames"]).abs().max() < 2e-3


def test_paired_syncnet_samples_share_the_audio_window(data_dir):
    ds = SyncNetDataset(list_videos("", data_dir), seed=5, resolution=64, paired=True)
    one = SyncNetDataset(list_videos("", data_dir), seed=5, resolution=64)
    s = ds[(1, 123)]
    assert s["frames"].shape == (2, 16, 3, 64, 64) and s["y"].tolist() == [1.0, 0.0]
    pos, neg = s["start_idx"].tolist()
    assert pos != neg
    u = one[(1, 123)]  # same draws: the unpaired sample is one of the two clips, same audio window
    assert torch.equal(u["audio"], s["audio"]) and u["start_idx"] == (pos if u["y"] == 1.0 else neg)
    flat = unpair_batch(collate_samples([s, ds[(2, 7)]]))
    assert flat["frames"].shape == (4, 16, 3, 64, 64) and flat["y"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert flat["audio"].shape == (2, 1, 80, 52) and flat["clips_per_audio"] == 2
    assert torch.equal(flat["audio"][0], s["audio"])


def test_shared_audio_embeds_give_the_same_loss_and_gradients_as_one_tower_pass_per_clip(data_dir):
    from omegaconf import OmegaConf

    from latentsync.models.syncnet import StableSyncNet

    ds = SyncNetDataset(list_videos("", data_dir), seed=5, resolution=64, paired=True)
    flat = unpair_batch(collate_samples([ds[(0, 1)], ds[(2, 7)]]))
    x, y = pack_syncnet_frames(flat["frames"]), flat["y"]
    torch.manual_seed(0)
    model = StableSyncNet(OmegaConf.to_container(OmegaConf.load(CONFIGS / "tiny_syncnet.yaml").model))
    grads = []
    for audio, k in ((flat["audio"], 2), (flat["audio"].repeat_interleave(2, dim=0), 1)):
        model.zero_grad()
        v, a = model(x, audio)
        assert a.shape[0] == 4 // k
        loss = syncnet_bce_loss(v, repeat_audio_embeds(a, k), y)
        loss.backward()
        grads.append((float(loss), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (l1, g1), (l2, g2) = grads
    assert abs(l1 - l2) < 1e-6 and float(g1.abs().max()) > 0
    assert float((g1 - g2).norm() / g2.norm()) < 1e-5  # float rounding only


def test_paired_negatives_need_an_even_batch(data_dir, tmp_path):
    from training.train_syncnet import main

    with pytest.raises(InvalidInputError, match="data.batch_size=3: must be even"):
        main(CONFIGS / "tiny_syncnet.yaml", _sync_overrides(data_dir, tmp_path / "o", 1, "data.batch_size=3",
                                                            "data.paired_negatives=true"))


def test_corrupt_video_is_skipped_and_counted(data_dir, tmp_path):
    shutil.copy(data_dir / "clip_0.mp4", tmp_path / "a.mp4")
    (tmp_path / "b.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    ds = SyncNetDataset(list_videos("", tmp_path), seed=0, resolution=64)
    with pytest.warns(UserWarning, match="b.mp4"):
        s = ds[(1, 0)]  # item 1 = b.mp4 (sorted): skipped, falls through to a.mp4
    assert s["num_skipped"] == 1 and s["video_path"].endswith("a.mp4")
    assert str(tmp_path / "b.mp4") in ds.skipped
    (tmp_path / "a.mp4").unlink()
    (tmp_path / "c.mp4").write_bytes(b"junk")
    ds = SyncNetDataset(list_videos("", tmp_path), seed=0, resolution=64, max_skips=5)
    with pytest.raises(InvalidInputError, match="consecutive"), pytest.warns(UserWarning):
        ds[(0, 0)]


def test_mel_cache_keyed_by_content(data_dir, tmp_path):
    from training.datasets.common import mel_for_video

    cache = tmp_path / "mel"
    shutil.copy(data_dir / "clip_0.mp4", tmp_path / "x.mp4")
    (tmp_path / "sub").mkdir()
    shutil.copy(data_dir / "clip_1.mp4", tmp_path / "sub" / "x.mp4")  # same basename, other content
    m0 = mel_for_video(tmp_path / "x.mp4", cache)
    m1 = mel_for_video(tmp_path / "sub" / "x.mp4", cache)
    assert len(list(cache.glob("*_mel.pt"))) == 2 and not torch.equal(m0, m1)
    shutil.copy(data_dir / "clip_0.mp4", tmp_path / "renamed.mp4")
    assert torch.equal(mel_for_video(tmp_path / "renamed.mp4", cache), m0)
    assert len(list(cache.glob("*_mel.pt"))) == 2


def test_unet_dataset_sample(data_dir):
    mask = load_mask_image("", 64)
    ds = UNetDataset(list_videos("", data_dir), seed=1, mask=mask, resolution=64, need_mel=True)
    s = ds[(2, 9)]
    assert s["gt"].shape == s["ref"].shape == s["masked"].shape == (16, 3, 64, 64)
    assert s["masks"].shape == (16, 1, 64, 64) and s["mel"].shape == (1, 80, 52)
    assert torch.equal(s["masked"], s["gt"] * s["masks"])
    assert not torch.equal(s["gt"], s["ref"])
    assert len(s["content_hash"]) == 64


# ----------------------------------------------------------------------------------------------
# losses


def test_mixed_noise_statistics():
    g = torch.Generator().manual_seed(0)
    n = mixed_noise((64, 4, 16, 8, 8), alpha=1.0, generator=g)
    assert abs(float(n.std()) - 1.0) < 0.02
    # frames share half the variance: correlation between two frames ~ 0.5 for alpha = 1
    a, b = n[:, :, 0].flatten(), n[:, :, 1].flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1]) - 0.5) < 0.05
    same = mixed_noise((2, 4, 16, 8, 8), 1.0, g, use_mixed_noise=False)
    assert torch.equal(same[:, :, 0], same[:, :, 5])


def test_syncnet_loss_and_accuracy():
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    a = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    y = torch.tensor([1.0, 0.0])
    assert float(syncnet_accuracy(v, a, y)) == 1.0
    assert float(syncnet_accuracy(v, a, 1 - y)) == 0.0
    assert torch.isfinite(syncnet_bce_loss(v, a, y))


def test_embedding_spread_detects_collapse():
    e = torch.nn.functional.normalize(torch.rand(8, 32), dim=1)
    same = e[:1].expand(8, 32)
    assert float(embedding_spread(same)) < 1e-6
    assert 0.05 < float(embedding_spread(e)) < 1.0
    assert float(embedding_spread(torch.eye(4))) == pytest.approx(0.75)


def test_tiny_syncnet_head_is_no_sign_code():
    from omegaconf import OmegaConf

    from latentsync.models.syncnet import StableSyncNet

    torch.manual_seed(0)
    model = StableSyncNet(OmegaConf.to_container(OmegaConf.load(CONFIGS / "tiny_syncnet.yaml").model))
    seen = {}
    model.visual_encoder.norm_out.register_forward_hook(lambda m, i, o: seen.setdefault("v", o))
    x, mel = torch.randn(8, 48, 32, 64), torch.randn(8, 1, 80, 52)
    with torch.no_grad():
        v, a = model(x, mel)
    # GroupNorm over 2 values per group would give exactly +-1 everywhere (the old 64-wide head)
    assert float((seen["v"].abs() - 1).abs().max()) > 0.5
    cos0 = float(torch.nn.functional.cosine_similarity(v, a).mean())
    assert 0.25 < cos0 < 0.42  # ~1/pi for relu of standardised features


def test_perceptual_and_trepa_losses_finite_with_gradients(tmp_path):
    lp = PerceptualLoss(channels=(8, 16, 16, 32, 32), seed=0)
    x = (torch.rand(2, 3, 32, 64) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 32, 64) * 2 - 1
    d = lp(x, y)
    assert torch.isfinite(d) and float(d.detach()) > 0 and float(lp(y, y)) < 1e-6
    d.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    torch.save({"state_dict": lp.state_dict()}, tmp_path / "lpips.pt")
    lp2 = PerceptualLoss(channels=(8, 16, 16, 32, 32), weights_path=tmp_path / "lpips.pt")
    assert float(lp2(x.detach(), y)) == pytest.approx(float(d.detach()))
    from latentsync.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="LPIPS"):
        PerceptualLoss(weights_path=tmp_path / "absent.pt")

    tr = TrepaLoss.tiny_random(0, image_size=32)
    v1 = (torch.rand(1, 3, 16, 64, 64) * 2 - 1).requires_grad_(True)
    v2 = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    t = tr(v1, v2)
    assert torch.isfinite(t) and float(t.detach()) > 0
    t.backward()
    assert float(v1.grad.abs().sum()) > 0
    with pytest.raises(MissingWeightsError, match="VideoMAE"):
        TrepaLoss.from_pretrained(tmp_path / "no_videomae")


def test_trainable_selection_and_audio_dropout():
    from latentsync.models.tiny import tiny_unet_config
    from latentsync.models.unet import UNet3DConditionModel
    from training.train_unet import select_trainable

    unet = UNet3DConditionModel.from_config(tiny_unet_config())
    names = select_trainable(unet, True, ["motion_modules.", "attentions."])
    assert names and all(("motion_modules." in n) or ("attentions." in n) for n in names)
    assert not unet.conv_in.weight.requires_grad
    assert len(select_trainable(unet, False, ["motion_modules."])) == len(list(unet.parameters()))


# ----------------------------------------------------------------------------------------------
# loops


def test_syncnet_loop_step_resume_exact(data_dir, tmp_path):
    from training.train_syncnet import main

    cfg = CONFIGS / "tiny_syncnet.yaml"
    full = main(cfg, _sync_overrides(data_dir, tmp_path / "full", 3, "ckpt.save_ckpt_steps=1",
                                     "run.validation_steps=2"))
    assert len(full["losses"]) == 3 and all(torch.isfinite(torch.tensor(full["losses"])))
    first = main(cfg, _sync_overrides(data_dir, tmp_path / "part", 1, "ckpt.save_ckpt_steps=1"))
    # mixed precision (bf16 autocast on CPU, fp16 + GradScaler on CUDA) and gradient checkpointing
    mp = main(cfg, _sync_overrides(data_dir, tmp_path / "mp", 1, "run.mixed_precision_training=true",
                                   "run.enable_gradient_checkpointing=true", "data.batch_size=2"))
    assert torch.isfinite(torch.tensor(mp["losses"])).all()
    rest = main(cfg, _sync_overrides(data_dir, tmp_path / "part", 3, "run.resume_from=latest",
                                     "ckpt.save_ckpt_steps=1"))
    assert first["losses"] + rest["losses"] == full["losses"]  # bit-exact
    ck = torch.load(tmp_path / "full" / "checkpoints" / "checkpoint-3.pt", weights_only=True)
    assert ck["global_step"] == 3 and "audio_encoder.conv_in.weight" in ck["state_dict"]
    assert ck["train_step_list"] == [1, 2, 3]
    a = torch.load(tmp_path / "part" / "checkpoints" / "checkpoint-3.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], ck["state_dict"][k]) for k in a)
    log = engine.read_jsonl(tmp_path / "full" / "log.jsonl")
    assert [r["step"] for r in log if r["event"] == "train"] == [1, 2, 3]
    assert any(r["event"] == "val" and 0.0 <= r["acc"] <= 1.0 for r in log)


def test_unet_loop_all_losses_and_checkpoint_loads(data_dir, embeds_cache, tmp_path):
    from latentsync.checkpoints import load_unet
    from latentsync.models.tiny import tiny_unet_config
    from training.train_unet import main

    res = main(CONFIGS / "tiny_unet.yaml", _unet_overrides(data_dir, tmp_path / "u", 1, embeds_cache,
                                                           "run.enable_gradient_checkpointing=true"))
    parts = res["components"][0]
    assert set(parts) == {"recon", "sync", "lpips", "trepa", "total"}
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    ck = res["checkpoint"]
    assert Path(ck).name == "checkpoint-1.pt" and Path(ck).with_name("checkpoint-1.resume.pt").is_file()
    unet = load_unet(ck, config=tiny_unet_config())
    sd = torch.load(ck, weights_only=True)
    assert set(sd) >= {"global_step", "state_dict"} and sd["global_step"] == 1
    assert all(torch.equal(v, sd["state_dict"][k]) for k, v in unet.state_dict().items())
    assert list(embeds_cache.glob("*_whisper.pt"))


def test_unet_loop_resume_exact_with_audio_dropout(data_dir, embeds_cache, tmp_path):
    from training.train_unet import main

    cfg = CONFIGS / "tiny_unet.yaml"
    extra = ("run.pixel_space_supervise=false", "run.uncond_prob=0.5", "data.num_frames=8")
    full = main(cfg, _unet_overrides(data_dir, tmp_path / "full", 2, embeds_cache, *extra))
    first = main(cfg, _unet_overrides(data_dir, tmp_path / "part", 1, embeds_cache, *extra))
    rest = main(cfg, _unet_overrides(data_dir, tmp_path / "part", 2, embeds_cache, "run.resume_from=latest", *extra))
    assert len(full["losses"]) == 2
    assert first["losses"] + rest["losses"] == full["losses"]


def test_stage2_uses_a_syncnet_written_by_the_syncnet_loop(data_dir, embeds_cache, tmp_path):
    from training.train_syncnet import main as train_syncnet
    from training.train_unet import main as train_unet

    sync = train_syncnet(CONFIGS / "tiny_syncnet.yaml", _sync_overrides(data_dir, tmp_path / "s", 1))
    res = train_unet(CONFIGS / "tiny_unet.yaml", _unet_overrides(
        data_dir, tmp_path / "u", 1, embeds_cache, f"ckpt.syncnet_ckpt_path={sync['checkpoint']}",
        "run.perceptual_loss_weight=0", "run.trepa_loss_weight=0", "data.num_frames=16"))
    parts = res["components"][0]
    assert set(parts) == {"recon", "sync", "total"} and 0.0 < parts["sync"] < 100.0
    init = next(r for r in engine.read_jsonl(tmp_path / "u" / "log.jsonl") if r["event"] == "start")
    assert init["config"]["ckpt"]["syncnet_ckpt_path"] == str(sync["checkpoint"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loop", ["train_syncnet", "train_unet"])
def test_torchrun_two_processes_gloo(loop, data_dir, embeds_cache, tmp_path):
    out = tmp_path / "ddp"
    cfg = CONFIGS / ("tiny_syncnet.yaml" if loop == "train_syncnet" else "tiny_unet.yaml")
    over = [f"data.train_data_dir={data_dir}", f"data.train_output_dir={out}", "run.max_train_steps=2",
            "run.validation_steps=0"]
    if loop == "train_unet":
        over += [f"data.audio_embeds_cache_dir={embeds_cache}", "run.pixel_space_supervise=false",
                 "data.num_frames=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", f"training.{loop}", "--config", str(cfg), *over]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = engine.read_jsonl(out / "log.jsonl")
    start = next(r for r in log if r["event"] == "start")
    assert start["world_size"] == 2
    assert [r["step"] for r in log if r["event"] == "train"] == [1, 2]
    ck = torch.load(out / "checkpoints" / "checkpoint-2.pt", weights_only=True)
    assert ck["global_step"] == 2
    rs = torch.load(out / "checkpoints" / "checkpoint-2.resume.pt", weights_only=True)
    assert len(rs["rng"]) == 2
