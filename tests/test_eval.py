"""Evaluation commands (spec 5) with tiny random networks on synthetic clips; JSON on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from training_helpers import synthetic_clips

from training.eval.fvd import frechet_distance

TINY_SYNC_CFG = REPO_ROOT / "training" / "configs" / "tiny_syncnet.yaml"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return synthetic_clips(tmp_path_factory, "evalclips", num_videos=2, num_frames=48, seed=10)


@pytest.fixture(scope="module")
def syncnet_ckpt(tmp_path_factory) -> Path:
    from omegaconf import OmegaConf

    from latentsync.models.syncnet import StableSyncNet

    torch.manual_seed(0)
    m = StableSyncNet(OmegaConf.to_container(OmegaConf.load(TINY_SYNC_CFG).model))
    p = tmp_path_factory.mktemp("sn") / "syncnet.pt"
    torch.save({"global_step": 0, "state_dict": m.state_dict()}, p)
    return p


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3)) * [1.0, 2.0, 0.5]
    b = rng.standard_normal((4000, 3)) * [2.0, 1.0, 0.5] + [1.0, 0.0, 0.0]
    # diagonal Gaussians: |mu|^2 + sum (s1 - s2)^2 = 1 + 1 + 1 + 0 = 3
    assert frechet_distance(a, b) == pytest.approx(3.0, abs=0.25)
    assert abs(frechet_distance(a, a)) < 1e-6


def test_fvd_cli(clips, tmp_path, capsys):
    from training.eval.fvd import main

    class Feat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 8, 3, stride=2)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3, 4))

    torch.manual_seed(0)
    torch.jit.script(Feat()).save(str(tmp_path / "i3d.pt"))
    (tmp_path / "short").mkdir()
    from training.synthetic import make_clip

    make_clip(tmp_path / "short" / "s.mp4", num_frames=20, resolution=64, seed=3)
    assert main(["--real", str(clips), "--fake", str(clips), "--i3d", str(tmp_path / "i3d.pt"),
                 "--face-crop", "none"]) == 0
    out = _json_out(capsys)
    assert out["num_real"] == out["num_fake"] == 2 and abs(out["fvd"]) < 1e-3
    with pytest.raises(ValueError, match="no usable video"):
        main(["--real", str(clips), "--fake", str(tmp_path / "short"), "--i3d", str(tmp_path / "i3d.pt"),
              "--face-crop", "none"])
    from latentsync.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="i3d"):
        main(["--real", str(clips), "--fake", str(clips), "--i3d", str(tmp_path / "absent_i3d.pt")])


def test_syncnet_acc_cli(clips, syncnet_ckpt, capsys):
    from training.eval.syncnet_acc import main

    assert main(["--data-dir", str(clips), "--syncnet-checkpoint", str(syncnet_ckpt), "--syncnet-config",
                 str(TINY_SYNC_CFG), "--num-samples", "6", "--batch-size", "3"]) == 0
    out = _json_out(capsys)
    assert out["num_samples"] == 6 and 0.0 <= out["accuracy"] <= 1.0 and out["chance"] == 0.5
    assert out["num_videos"] == 2
    assert main(["--data-dir", str(clips), "--syncnet-checkpoint", str(syncnet_ckpt), "--syncnet-config",
                 str(TINY_SYNC_CFG), "--all-pairs", "--batch-size", "8"]) == 0
    out = _json_out(capsys)
    assert out["num_videos"] == 2 and out["num_pairs"] == 2 * 33 * 33 and 0.0 <= out["accuracy"] <= 1.0


class _OracleSyncNet(torch.nn.Module):
    """A SyncNet made of the synthetic clips' construction: the visual embedding is the mouth area per
    frame (dark red-channel pixels around the mouth in the packed lower half), the audio embedding
    the loudness per frame (loudest mel band, 52 columns pooled to 16); both centred, so in-sync
    pairs have cos near 1."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, frames, audio):
        mouth = (frames[:, 0::3, 8:24, 20:44] < 0).float().mean(dim=(2, 3))
        loudness = torch.nn.functional.adaptive_avg_pool1d(audio.amax(dim=2), 16).flatten(1)
        unit = lambda t: torch.nn.functional.normalize(t - t.mean(dim=1, keepdim=True), dim=1)  # noqa: E731
        return unit(mouth), unit(loudness)


def test_accuracy_over_all_offsets_scores_every_pair(clips, tmp_path):
    from training.datasets.common import list_videos
    from training.datasets.syncnet import SyncNetDataset
    from training.eval.syncnet_acc import syncnet_accuracy_all_offsets
    from training.synthetic import make_clip

    make_clip(tmp_path / "short.mp4", num_frames=20, resolution=64, seed=3)  # < 32 frames: no negative
    videos = list_videos("", str(clips)) + [tmp_path / "short.mp4"]
    out = syncnet_accuracy_all_offsets(_OracleSyncNet(), SyncNetDataset(videos, seed=0, resolution=64),
                                       batch_size=7)
    n = 48 - 16 + 1  # clip starts of a 48-frame clip with 16-frame windows
    assert out["num_videos"] == 2 and out["num_pairs"] == 2 * n * n and len(out["skipped"]) == 1
    assert out["accuracy"] == pytest.approx(0.5 * out["in_sync_accuracy"] + 0.5 * out["off_sync_accuracy"])
    # the oracle is right on (nearly) every in-sync pair and most off-sync ones; a pairing error
    # between audio and frame windows (an offset, a transposed matrix of starts) would sink it
    assert out["in_sync_accuracy"] > 0.97 and out["accuracy"] > 0.85, out
    by = out["off_sync_accuracy_by_offset"]
    assert list(by) == ["1", "2", "3", "4-5", "6-10", "11-20", "21+"] and by["1"] < by["6-10"]


def test_sync_conf_cli(clips, syncnet_ckpt, capsys, tmp_path):
    from training.eval.sync_conf import main

    (tmp_path / "bad.mp4").write_bytes(b"nope")
    rc = main(["--video", str(clips / "clip_0.mp4"), "--video", str(tmp_path / "bad.mp4"),
               "--syncnet-checkpoint", str(syncnet_ckpt), "--syncnet-config", str(TINY_SYNC_CFG),
               "--aligned", "--max-offset", "3", "--stride", "4"])
    out = _json_out(capsys)
    assert rc == 0 and out["num_videos"] == 1
    r = out["videos"][str(clips / "clip_0.mp4")]
    assert r["sync_c"] >= 0.0 and 0.0 <= r["sync_d"] <= 2 ** 0.5 + 1e-6 and -3 <= r["offset"] <= 3
    assert "error" in out["videos"][str(tmp_path / "bad.mp4")]
