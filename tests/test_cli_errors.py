"""CLI error handling: every bad input ends with one ``error: ...`` line, exit code 2, no output file.

Everything but the no-face case fails before any model is loaded (cheap).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO_ROOT
from latentsync.cli import main
from latentsync.video.io import VideoWriter

EXAMPLE_VIDEO = REPO_ROOT / "examples" / "demo1_3s.mp4"
EXAMPLE_AUDIO = REPO_ROOT / "examples" / "demo1_3s.wav"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    if not EXAMPLE_VIDEO.exists() or not EXAMPLE_AUDIO.exists():
        pytest.skip("examples/demo1_3s.* not present")
    d = tmp_path_factory.mktemp("media")
    wav = d / "speech.wav"
    t = np.arange(16000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, subtype="PCM_16")
    empty_wav = d / "empty.wav"
    sf.write(empty_wav, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    short_wav = d / "short.wav"
    sf.write(short_wav, np.zeros(200, np.float32), 16000, subtype="PCM_16")
    grey = d / "grey.mp4"
    with VideoWriter(grey, 25, 160, 128) as w:
        w.write(np.full((30, 128, 160, 3), 128, np.uint8))
    data = EXAMPLE_VIDEO.read_bytes()
    truncated = d / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    garbage = d / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    return {"wav": wav, "empty_wav": empty_wav, "short_wav": short_wav, "grey": grey,
            "truncated": truncated, "garbage": garbage, "video": EXAMPLE_VIDEO, "audio": EXAMPLE_AUDIO}


def _run(capsys, tmp_path, *args, video=None, audio=None, output=None, tiny=True):
    out = Path(output) if output is not None else tmp_path / "out" / "result.mp4"
    out.parent.mkdir(exist_ok=True)
    argv = ["infer", "--video", str(video), "--audio", str(audio), "--output", str(out), "--quiet",
            "--resolution", "256", "--steps", "1", *args]
    if tiny:
        argv.append("--tiny-random")
    rc = main(argv)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2, err
    assert len(errors) == 1, err
    assert "Traceback" not in err
    if output is None:
        assert not out.exists()
        assert list(out.parent.iterdir()) == []  # no temporary file left either
    return errors[0]


def test_nonexistent_video(media, capsys, tmp_path):
    line = _run(capsys, tmp_path, video=tmp_path / "missing.mp4", audio=media["audio"])
    assert "video" in line and "missing.mp4" in line and "does not exist" in line


def test_nonexistent_audio(media, capsys, tmp_path):
    line = _run(capsys, tmp_path, video=media["video"], audio=tmp_path / "nope.wav")
    assert "audio" in line and "nope.wav" in line


def test_unsupported_resolution(media, capsys, tmp_path):
    line = _run(capsys, tmp_path, "--resolution", "300", video=media["video"], audio=media["audio"])
    assert "resolution" in line and "300" in line and "256" in line


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "0"], ["steps", "0"]),
        (["--guidance-scale", "0.5"], ["guidance_scale", "0.5"]),
        (["--steps", "abc"], ["--steps", "abc"]),
        (["--crf", "99"], ["crf", "99"]),
        (["--scheduler", "euler"], ["--scheduler", "euler", "dpmsolver++"]),
    ],
)
def test_bad_numbers(media, capsys, tmp_path, args, words):
    line = _run(capsys, tmp_path, *args, video=media["video"], audio=media["audio"])
    assert all(w in line for w in words), line


def test_missing_required_argument(capsys):
    assert main(["infer", "--audio", "a.wav", "--output", "o.mp4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--video" in err[0]


def test_zero_length_and_too_short_audio(media, capsys, tmp_path):
    line = _run(capsys, tmp_path, video=media["video"], audio=media["empty_wav"])
    assert "empty.wav" in line and ("no decodable samples" in line or "shorter" in line or "empty" in line)
    line = _run(capsys, tmp_path, video=media["video"], audio=media["short_wav"])
    assert "short.wav" in line and "shorter than one video frame" in line


def test_corrupt_and_truncated_video(media, capsys, tmp_path):
    line = _run(capsys, tmp_path, video=media["truncated"], audio=media["audio"])
    assert "truncated.mp4" in line and "truncated" in line
    line = _run(capsys, tmp_path, video=media["garbage"], audio=media["audio"])
    assert "garbage.mp4" in line and "cannot be opened" in line


def test_output_equal_to_input_is_refused(media, capsys, tmp_path):
    video = tmp_path / "in.mp4"
    shutil.copy(media["video"], video)
    before = video.read_bytes()
    line = _run(capsys, tmp_path, video=video, audio=media["audio"], output=video)
    assert "same file" in line
    assert video.read_bytes() == before


def test_missing_checkpoint_files_offline(media, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "ckpt"
    empty.mkdir()
    line = _run(capsys, tmp_path, "--checkpoint-dir", str(empty), video=media["video"], audio=media["audio"],
                tiny=False)
    assert "latentsync_unet.pt" in line and "whisper" in line and "sd-vae-ft-mse" in line
    assert list(empty.iterdir()) == []  # nothing half-downloaded


def test_video_without_any_face(media, capsys, tmp_path):
    """A grey video: every frame passes alignment without a face -> NoFaceError, no output."""
    line = _run(capsys, tmp_path, video=media["grey"], audio=media["wav"])
    assert "no face" in line and "grey.mp4" in line
