"""Data pipeline (spec 4) on a short real clip cut from the demo media, plus pure helpers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import media_file, require_landmarks

from latentsync.errors import InvalidInputError
from training.preprocess.common import Options
from training.preprocess.resample import resample_indices
from training.preprocess.segment import segment_ranges
from training.preprocess.shot import histogram_shots
from training.preprocess.sync import shift_audio


def _digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    """demo1 cut to 3.2 s and cropped around the face (270x270), plus a corrupt .mp4."""
    import cv2

    from latentsync.video.io import VideoWriter, iter_frames, read_audio

    src = media_file("demo1_video.mp4")
    n = 80
    frames = []
    for chunk in iter_frames(src, chunk_size=25):
        frames += [cv2.resize(f[460:1000, 330:870], (270, 270), interpolation=cv2.INTER_AREA) for f in chunk]
        if len(frames) >= n:
            break
    d = tmp_path_factory.mktemp("raw")
    (d / "talks").mkdir()
    audio = read_audio(src, 16000)[: n * 640]
    with VideoWriter(d / "talks" / "demo1.mp4", fps=25, width=270, height=270, audio=audio, crf=18,
                     preset="fast") as w:
        w.write(np.stack(frames[:n]))
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(200))
    return d


def test_resample_indices():
    assert resample_indices(250, 25.0, 25.0).tolist() == list(range(250))
    idx = resample_indices(600, 30.0, 25.0)
    assert len(idx) == 500 and idx[0] == 0 and idx[-1] <= 599 and (np.diff(idx) >= 1).all()
    assert resample_indices(30, 30.0, 25.0)[:6].tolist() == [0, 1, 2, 4, 5, 6]


def test_segment_ranges():
    assert segment_ranges(125, 25.0) == [(0, 125)]
    assert segment_ranges(374, 25.0) == [(0, 125), (125, 374)]  # 5 s + 9.96 s
    assert segment_ranges(400, 25.0) == [(0, 125), (125, 250), (250, 400)]
    assert segment_ranges(40, 25.0) == []  # < 2 s
    assert all(5 * 25 <= b - a < 10 * 25 for a, b in segment_ranges(1234, 25.0))


def test_histogram_shot_detector_finds_cut():
    rng = np.random.default_rng(0)
    a = np.full((30, 48, 48, 3), (200, 40, 40), np.uint8) + rng.integers(0, 8, (30, 48, 48, 3), dtype=np.uint8)
    b = np.full((30, 48, 48, 3), (30, 60, 220), np.uint8) + rng.integers(0, 8, (30, 48, 48, 3), dtype=np.uint8)
    assert histogram_shots(np.concatenate([a, b]), 25.0) == [(0, 30), (30, 60)]
    assert histogram_shots(a, 25.0) == [(0, 30)]


def test_write_ranges_streams_segments(tmp_path):
    from latentsync.video.io import probe_video, read_audio
    from training.preprocess.common import probe_clip, write_ranges
    from training.synthetic import make_clip

    src = make_clip(tmp_path / "src.mp4", num_frames=60, resolution=64, seed=1)
    info, audio = probe_clip(src)
    outs = write_ranges(src, [(0, 20), (20, 45)], [tmp_path / "a.mp4", tmp_path / "b.mp4"], info, audio,
                        Options(preset="ultrafast"))
    assert [probe_video(p).num_frames for p in outs] == [20, 25]
    assert abs(read_audio(outs[1]).size - 25 * 640) <= 1024


def test_shift_audio():
    x = np.arange(10, dtype=np.float32)
    assert shift_audio(x, 1, 5.0, 10).tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 0, 0]
    assert shift_audio(x, -1, 5.0, 10).tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]


def test_output_inside_input_is_refused(tmp_path):
    from training.preprocess.run import run_pipeline

    with pytest.raises(InvalidInputError, match="inside"):
        run_pipeline(tmp_path, tmp_path / "out")
    with pytest.raises(InvalidInputError, match="unknown"):
        run_pipeline(tmp_path, tmp_path.parent / "o2", steps=["bogus"])


def test_pipeline_on_real_clip(raw_dir, tmp_path):
    require_landmarks()
    from latentsync.models.syncnet import StableSyncNet
    from latentsync.video.io import probe_video, read_audio
    from omegaconf import OmegaConf
    from training.preprocess.run import main

    before = _digest(raw_dir)
    out = tmp_path / "data"
    # A tiny random SyncNet (64 px faces) and a constant quality scorer exercise the model steps.
    cfg_path = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny_syncnet.yaml"
    torch.manual_seed(0)
    sn = StableSyncNet(OmegaConf.to_container(OmegaConf.load(cfg_path).model))
    torch.save({"global_step": 0, "state_dict": sn.state_dict()}, tmp_path / "sync.pt")

    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0],), 50.0)

    torch.jit.script(Const()).save(str(tmp_path / "q.pt"))
    argv = ["--input", str(raw_dir), "--output", str(out), "--resolution", "256",
            "--syncnet-checkpoint", str(tmp_path / "sync.pt"), "--syncnet-config", str(cfg_path),
            "--sync-conf-threshold", "-1", "--max-offset", "4", "--sync-search-offset", "4", "--quality-model", str(tmp_path / "q.pt"),
            "--preset", "ultrafast"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["resample", "shot", "segment", "affine", "sync", "quality"]
    assert steps["resample"]["failed"] == 1 and steps["resample"]["failures"][0]["input"] == "broken.mp4"
    assert steps["resample"]["ok"] == 1
    for folder in ["resampled", "shot", "segmented", "affine_transformed", "av_synced", "high_visual_quality"]:
        assert (out / folder / "manifest.jsonl").is_file()
    assert (out / "resampled" / "talks" / "demo1.mp4").is_file()
    assert (out / "shot" / "talks" / "demo1_shot_000.mp4").is_file()
    final = out / "high_visual_quality" / "talks" / "demo1_shot_000_000.mp4"
    assert final.is_file() and summary["num_clips"] == 1
    assert (out / "fileslist.txt").read_text().split() == ["high_visual_quality/talks/demo1_shot_000_000.mp4"]
    info = probe_video(out / "affine_transformed" / "talks" / "demo1_shot_000_000.mp4")
    assert (info.width, info.height, info.fps, info.num_frames) == (256, 256, 25.0, 80)
    assert abs(read_audio(final).size - 80 * 640) <= 2048
    sync_rec = json.loads((out / "av_synced" / "manifest.jsonl").read_text().splitlines()[0])
    assert set(sync_rec["info"]) == {"sync_c", "sync_d", "offset"}
    assert _digest(raw_dir) == before  # inputs untouched, nothing added or removed

    # resume: everything is already in the manifests -> nothing is redone
    assert main(argv + ["--steps", "resample,shot,segment,affine"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [s["resumed"] for s in again["steps"]] == [2, 1, 1, 1]
    # without models the model steps are skipped with a message, the previous folder is final
    out2 = tmp_path / "data2"
    assert main(["--input", str(out / "segmented"), "--output", str(out2), "--steps", "sync,quality"]) == 0
    s2 = json.loads((out2 / "summary.json").read_text())
    assert [s["step"] for s in s2["skipped_steps"]] == ["sync", "quality"]
    assert "no --syncnet-checkpoint" in s2["skipped_steps"][0]["reason"]
