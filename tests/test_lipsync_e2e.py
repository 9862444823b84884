"""End to end: ``python -m latentsync infer --tiny-random`` on real short clips (examples/).

The models are tiny and random, so the mouth region becomes noise: the tests check the plumbing
(frame count and fps, audio track length, untouched background, changed face, looping, no leftovers),
not lip sync. Also a model-free test of the streaming frame source (ping-pong loop through the spill
files, output chunks of 16).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, require_landmarks
from latentsync.cli import main
from latentsync.types import FaceCrops
from latentsync.video.io import VideoWriter, iter_frames, probe_video, read_audio
from latentsync.video.timeline import loop_indices, num_output_frames

EXAMPLES = REPO_ROOT / "examples"
STEPS = "2"


def _example(name: str) -> Path:
    p = EXAMPLES / name
    if not p.exists():
        pytest.skip(f"example clip {p} not present")
    return p


# ------------------------------------------------------------------------------------------------
# streaming frame source (no models)
# ------------------------------------------------------------------------------------------------


class _IndexAligner:
    """Stand-in FaceAligner: 'face' = the frame's mean value; matrix[0, 2] = absolute frame index."""

    crop_size = (6, 8)

    def __init__(self, no_face=()):
        self.mask = torch.ones(8, 8)
        self.no_face = set(no_face)
        self.calls = []

    def align(self, frames, start_index=0):
        n = frames.shape[0]
        self.calls.append((start_index, n))
        faces = torch.from_numpy(frames[:, :8, :8].copy())
        m = torch.zeros(n, 2, 3)
        m[:, 0, 2] = torch.arange(start_index, start_index + n, dtype=torch.float32)
        return FaceCrops(
            faces=faces, affine_matrices=m, crop_size=self.crop_size, mask=self.mask,
            frame_size=tuple(frames.shape[1:3]), resolution=8,
            no_face_indices=[start_index + i for i in range(n) if start_index + i in self.no_face],
            start_index=start_index,
        )


@pytest.fixture(scope="module")
def counting_video(tmp_path_factory):
    """20 frames 32x32, frame i filled with grey level 10 * i + 20 (survives H.264)."""
    path = tmp_path_factory.mktemp("count") / "count.mp4"
    frames = np.stack([np.full((32, 32, 3), 10 * i + 20, np.uint8) for i in range(20)])
    with VideoWriter(path, 25, 32, 32, crf=0) as w:
        w.write(frames)
    return path


def _chunks(video, idx, n_v, aligner, spill_dir):
    """The CLI's frame source: decode the forward pass, align it, loop it, cut it into chunks of 16."""
    from latentsync.pipeline.stages import align_chunks
    from latentsync.video.segments import output_chunks, source_segments, take_frames

    aligned = align_chunks(aligner, take_frames(iter_frames(video, chunk_size=16), min(len(idx), n_v)))
    return list(output_chunks(source_segments(aligned, idx, n_v, spill_dir, 16), 16))


def test_streaming_source_loops_ping_pong_in_chunks_of_16(counting_video, tmp_path):

    n_out, n_v = 53, 20
    idx = loop_indices(n_v, n_out)
    aligner = _IndexAligner(no_face={3, 17})
    spill = tmp_path / "spill"
    spill.mkdir()
    chunks = _chunks(counting_video, idx, n_v, aligner, spill)
    assert [c[0].shape[0] for c in chunks] == [16, 16, 16, 5]
    assert [c[1].start_index for c in chunks] == [0, 16, 32, 48]
    assert aligner.calls == [(0, 16), (16, 4)]  # each source frame aligned once, in order
    frames = np.concatenate([c[0] for c in chunks])
    source = np.concatenate([c[1].affine_matrices[:, 0, 2].numpy() for c in chunks]).astype(int)
    assert source.tolist() == idx.tolist()  # 0..19, 19..0, 0..12
    levels = frames[:, 16, 16, 0].astype(int)
    assert np.abs(levels - (10 * idx + 20)).max() <= 3
    no_face = [i for c in chunks for i in c[1].no_face_indices]
    assert no_face == [k for k in range(n_out) if idx[k] in (3, 17)]


def test_streaming_source_cuts_long_video(counting_video, tmp_path):
    aligner = _IndexAligner()
    chunks = _chunks(counting_video, loop_indices(20, 7), 20, aligner, tmp_path)
    assert [c[0].shape[0] for c in chunks] == [7] and aligner.calls == [(0, 7)]  # only what is used
    assert list(tmp_path.iterdir()) == []  # nothing spilled without a loop


# ------------------------------------------------------------------------------------------------
# CLI end to end
# ------------------------------------------------------------------------------------------------


def _face_boxes(video: Path, n: int) -> np.ndarray:
    """Frame-pixel boxes ``[n, 4]`` of the aligned crops (the only region the output may change)."""
    from latentsync.face.aligner import FaceAligner
    from latentsync.face.alignment import crop_bbox_in_frame

    boxes = []
    with FaceAligner(256, fps=probe_video(video).fps) as aligner:
        pos = 0
        for frames in iter_frames(video, 16):
            frames = frames[: n - pos]
            if len(frames) == 0:
                break
            crops = aligner.align(frames, pos)
            assert not crops.no_face_indices
            boxes.append(crop_bbox_in_frame(crops.affine_matrices.numpy(), crops.crop_size))
            pos += len(frames)
    return np.concatenate(boxes)


def _psnr(mse: float) -> float:
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _run_cli(video: Path, audio: Path, out: Path, *extra: str) -> None:
    require_landmarks()
    rc = main(["infer", "--video", str(video), "--audio", str(audio), "--output", str(out), "--tiny-random",
               "--resolution", "256", "--steps", STEPS, "--quiet", *extra])
    assert rc == 0


def _check_output(video: Path, audio: Path, out: Path, capsys) -> dict:
    info_in = probe_video(video)
    wav = read_audio(audio)
    n_expected = num_output_frames(len(wav), info_in.fps)
    # playable, frame count, fps, size
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264"
        assert abs(float(vs.average_rate) - info_in.fps) < 1e-6
        n_decoded = sum(1 for _ in c.decode(vs))
        assert len(c.streams.audio) == 1
    info_out = probe_video(out)
    assert n_decoded == info_out.num_frames == n_expected
    assert (info_out.width, info_out.height) == (info_in.width, info_in.height)
    # audio track = the input audio (cut to the video; never longer) within one frame
    out_audio = read_audio(out)
    assert abs(len(out_audio) - len(wav)) / 16000 <= 1 / info_in.fps
    # background untouched (PSNR outside the face boxes), face region changed
    n_src = min(n_expected, info_in.num_frames)
    boxes = _face_boxes(video, n_src)
    idx = loop_indices(info_in.num_frames, n_expected)
    tail = {int(i) for i in idx[n_src:]}
    keep = {}
    se_out, n_out_px, face_diff = 0.0, 0, []
    outside_all = []
    out_iter = iter_frames(out, 16)
    out_buf = []
    for pos, src in enumerate(_frames_one_by_one(video, n_src)):
        if not out_buf:
            out_buf = list(next(out_iter))
        got = out_buf.pop(0).astype(np.float64)
        if pos in tail:
            keep[pos] = src
        x0, y0, x1, y1 = boxes[pos]
        m = 12
        inside = np.zeros(src.shape[:2], bool)
        inside[max(0, int(y0) - m): int(y1) + m + 1, max(0, int(x0) - m): int(x1) + m + 1] = True
        d = (got - src.astype(np.float64)) ** 2
        se_out += d[~inside].sum()
        n_out_px += (~inside).sum() * 3
        outside_all.append(_psnr(d[~inside].mean()))
        # mouth area: lower middle of the crop box
        cx, w, h = (x0 + x1) / 2, x1 - x0, y1 - y0
        mouth = np.abs(got - src)[int(y0 + 0.6 * h): int(y0 + 0.85 * h), int(cx - 0.2 * w): int(cx + 0.2 * w)]
        face_diff.append(mouth.mean())
    # looped tail frames show earlier source frames (outside the face)
    for k in range(n_src, n_expected):
        if not out_buf:
            out_buf = list(next(out_iter))
        got = out_buf.pop(0).astype(np.float64)
        src = keep[int(idx[k])].astype(np.float64)
        rows = slice(0, int(boxes[int(idx[k])][1]) - 20)  # above the face
        assert _psnr(((got[rows] - src[rows]) ** 2).mean()) >= 35
    psnr_outside = _psnr(se_out / n_out_px)
    assert psnr_outside >= 35, psnr_outside
    assert min(outside_all) >= 30
    assert min(face_diff) > 5, face_diff  # random weights: the mouth area is regenerated
    captured = capsys.readouterr()
    assert "NOT lip-synced" in captured.err and "NOT lip-synced" in captured.out
    return {"frames": n_expected, "psnr_outside_db": psnr_outside, "mouth_mean_abs_diff": float(np.mean(face_diff))}


def _frames_one_by_one(video: Path, n: int):
    k = 0
    for chunk in iter_frames(video, 16):
        for f in chunk:
            if k >= n:
                return
            yield f
            k += 1


def _ours(folder: Path) -> list[Path]:
    """Entries the pipeline / CLI made in the temp folder (torch may add its own cache folders)."""
    return [p for p in folder.iterdir() if p.name.startswith("latentsync")]


@pytest.fixture
def clean_tmp(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def test_cli_tiny_random_25fps_loop_and_deepcache(tmp_path, clean_tmp, capsys):
    video, audio = _example("demo1_3s.mp4"), _example("demo1_3s.wav")
    before = video.stat().st_mtime_ns, audio.stat().st_mtime_ns
    out = tmp_path / "out" / "synced.mp4"
    out.parent.mkdir()
    _run_cli(video, audio, out, "--deepcache")
    stats = _check_output(video, audio, out, capsys)
    assert stats["frames"] == 77  # floor(150 / 2) + 2 from a 75-frame video: looped
    assert sorted(p.name for p in out.parent.iterdir()) == ["synced.mp4"]  # no temp leftovers
    assert _ours(clean_tmp) == []  # spill + tiny checkpoints removed
    assert (video.stat().st_mtime_ns, audio.stat().st_mtime_ns) == before
    print("demo1_3s:", stats)


def test_cli_tiny_random_30fps_keeps_fps_and_cuts_video(tmp_path, clean_tmp, capsys):
    """30 fps source, speech shorter than the video (1.0 s of the clip's own track): the output keeps
    30 fps and is cut to the audio windows (32 frames of the 60)."""
    import soundfile as sf

    video = _example("demo3_30fps_2s.mp4")
    speech = tmp_path / "speech_1s.wav"
    sf.write(speech, read_audio(video)[:16000], 16000, subtype="PCM_16")
    out = tmp_path / "synced30.mp4"
    _run_cli(video, speech, out, "--guidance-scale", "1.0", "--seed", "7")
    stats = _check_output(video, speech, out, capsys)
    assert stats["frames"] == num_output_frames(16000, 30.0) == 32
    assert _ours(clean_tmp) == []
    print("demo3_30fps_2s + 1 s speech:", stats)
