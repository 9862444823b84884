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


def test_non_finite_audio_is_refused(media, capsys, tmp_path):
    """Float WAVs with NaN / inf used to reach the output and Whisper as full-scale -1.0 (exit 0)."""
    x = (0.3 * np.sin(np.arange(32000) / 9)).astype(np.float32)
    x[24000] = np.nan
    nan_wav = tmp_path / "nan.wav"
    sf.write(nan_wav, x, 16000, subtype="FLOAT")
    line = _run(capsys, tmp_path, video=media["video"], audio=nan_wav)
    assert "nan.wav" in line and "1.500 s" in line and "finite" in line
    all_nan = tmp_path / "all_nan.wav"
    sf.write(all_nan, np.full(8000, np.inf, np.float32), 16000, subtype="FLOAT")
    line = _run(capsys, tmp_path, video=media["video"], audio=all_nan)
    assert "all_nan.wav" in line and "0.000 s" in line


@pytest.mark.parametrize("args, words", [
    (["--device", "tpu"], ["--device", "tpu"]),
    (["--device", "cuda:x"], ["--device", "cuda:x"]),
    (["--seed", str(2**64)], ["seed", str(2**64)]),
    (["--seed", "-2"], ["seed", "-2"]),
])
def test_bad_device_and_seed(media, capsys, tmp_path, args, words):
    line = _run(capsys, tmp_path, *args, video=media["video"], audio=media["audio"])
    assert all(w in line for w in words), line


def test_unwritable_output_folder_is_found_before_any_model_is_loaded(media, capsys, readonly_folder):
    folder = readonly_folder
    rc = main(["infer", "--video", str(media["video"]), "--audio", str(media["audio"]), "--quiet",
               "--output", str(folder / "out.mp4"), "--resolution", "256", "--tiny-random"])
    err = capsys.readouterr().err
    assert rc == 2 and "not writable" in err and str(folder) in err, err
    assert "loading models" not in err and "video:" not in err  # before the inputs are even decoded


def test_odd_video_size_is_stated(media, capsys, tmp_path, monkeypatch):
    """An odd-size input is written one pixel larger (H.264 yuv420p); the log line and --help say so."""
    import av

    from latentsync.video.io import read_video

    odd = tmp_path / "odd.mkv"
    faces = read_video(media["video"], max_frames=3)[0]
    with av.open(str(odd), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 271, 481, "yuv444p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(faces[i], format="rgb24").reformat(271, 481)
            frame.pts = i
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "ckpt"
    empty.mkdir()
    rc = main(["infer", "--video", str(odd), "--audio", str(media["wav"]), "--output", str(tmp_path / "o.mp4"),
               "--checkpoint-dir", str(empty)])
    err = capsys.readouterr().err
    assert rc == 2 and "271x481 (odd side: written as 272x482" in err, err
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    assert "padded by one pixel" in " ".join(capsys.readouterr().out.split())


def test_video_without_any_face(media, capsys, tmp_path):
    """A grey video: every frame passes alignment without a face -> NoFaceError, no output."""
    line = _run(capsys, tmp_path, video=media["grey"], audio=media["wav"])
    assert "no face" in line and "grey.mp4" in line
