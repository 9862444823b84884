"""Tests for latentsync.video.io: probing, streaming decode, audio decode, atomic H.264/AAC writing.

Uses the committed clips in examples/ (always present in a clone) and, when available, the full
official demo media (conftest.media_file skips otherwise). Full-size decoding is limited to the
75-frame and 60-frame example clips to keep the file fast.
"""

from __future__ import annotations

import hashlib
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import REPO_ROOT, media_file
from latentsync.errors import InvalidInputError, LatentSyncError
from latentsync.video.io import VideoWriter, iter_frames, probe_video, read_audio, read_video, resample_audio

EXAMPLES = REPO_ROOT / "examples"
DEMO1 = EXAMPLES / "demo1_3s.mp4"
DEMO1_WAV = EXAMPLES / "demo1_3s.wav"
DEMO3 = EXAMPLES / "demo3_30fps_2s.mp4"


def _encode_all(container, stream, frames, pts_step: int = 1) -> None:
    """Encode hand-made PyAV frames (pts = index * pts_step) into ``stream`` and flush it."""
    for i, frame in enumerate(frames):
        frame.pts = i * pts_step
        for pkt in stream.encode(frame):
            container.mux(pkt)
    for pkt in stream.encode(None):
        container.mux(pkt)

def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def smooth_frames(n: int, h: int, w: int) -> np.ndarray:
    """Smooth, moving colour content (what H.264 at crf 18 reproduces well)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        cx, cy = w * (0.3 + 0.02 * i), h * 0.5
        blob = 90 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.15 * w) ** 2))
        out[i, ..., 0] = np.clip(40 + 150 * x / w + blob, 0, 255)
        out[i, ..., 1] = np.clip(60 + 120 * y / h + 0.5 * blob, 0, 255)
        out[i, ..., 2] = np.clip(200 - 100 * x / w + 2 * i, 0, 255)
    return out


def single_line_error(excinfo, path) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


@pytest.fixture(scope="module")
def demo1_sequential():
    """Per-frame digests and chunk lengths of a sequential decode of the demo1 cut (decoded once)."""
    digests, chunk_lens, shapes = [], [], set()
    for chunk in iter_frames(DEMO1, chunk_size=16):
        assert chunk.dtype == np.uint8 and chunk.flags["C_CONTIGUOUS"]
        chunk_lens.append(len(chunk))
        shapes.add(chunk.shape[1:])
        digests.extend(hashlib.md5(f.tobytes()).hexdigest() for f in chunk)
    return digests, chunk_lens, shapes


# ---------------------------------------------------------------------------------------------
# committed examples
# ---------------------------------------------------------------------------------------------


def test_examples_are_small_and_present():
    for p in (DEMO1, DEMO1_WAV, DEMO3):
        assert p.is_file(), f"committed example {p} is missing"
    assert DEMO1.stat().st_size < 1.5e6
    assert DEMO3.stat().st_size < 1.5e6


def test_probe_demo1_cut():
    info = probe_video(DEMO1)
    assert (info.num_frames, info.width, info.height) == (75, 1080, 1920)
    assert info.fps == 25.0
    assert info.duration_s == pytest.approx(3.0)


def test_iter_frames_demo1_cut_streams_all_frames(demo1_sequential):
    digests, chunk_lens, shapes = demo1_sequential
    assert chunk_lens == [16, 16, 16, 16, 11]
    assert shapes == {(1920, 1080, 3)}
    assert len(set(digests)) > 60  # real, changing content


def test_iter_frames_start_matches_sequential(demo1_sequential):
    digests = demo1_sequential[0]
    got = []
    for chunk in iter_frames(DEMO1, chunk_size=8, start=37):
        got.extend(hashlib.md5(f.tobytes()).hexdigest() for f in chunk)
        if len(got) >= 3:
            break
    assert got[:3] == digests[37:40]
    assert list(iter_frames(DEMO1, start=75)) == []


def test_iter_frames_start_seeks_by_timestamp(tmp_path):
    """With key frames every 5 frames the reader really seeks; indices come from timestamps."""
    path = tmp_path / "gop5.mp4"
    n = 40
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(30000, 1001))
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.codec_context.gop_size = 5
        s.options = {"crf": "10", "bf": "2"}
        frames = []
        for i in range(n):
            img = np.full((32, 32, 3), 6 * i, np.uint8)  # frame i has grey level 6 i
            frames.append(av.VideoFrame.from_ndarray(img, format="rgb24"))
        _encode_all(c, s, frames)
    for start in (0, 7, 23, 39):
        frames = np.concatenate(list(iter_frames(path, chunk_size=4, start=start)))
        assert len(frames) == n - start
        levels = frames.reshape(len(frames), -1).mean(axis=1)
        np.testing.assert_allclose(levels, 6 * np.arange(start, n), atol=3)


def test_demo3_30fps_cut():
    info = probe_video(DEMO3)
    assert info.fps == 30.0
    assert (info.num_frames, info.width, info.height) == (60, 1080, 1920)
    lens = [len(c) for c in iter_frames(DEMO3, chunk_size=7)]
    assert sum(lens) == 60 and max(lens) == 7


def test_read_audio_wav_is_sample_exact():
    wav = read_audio(DEMO1_WAV)
    with wave.open(str(DEMO1_WAV), "rb") as r:
        ref = np.frombuffer(r.readframes(r.getnframes()), "<i2").astype(np.float32) / 32768.0
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == 48000
    np.testing.assert_array_equal(wav, ref)
    assert -1.0 <= wav.min() and wav.max() < 1.0


def test_read_audio_resamples_and_reads_mp4_track():
    wav8k = read_audio(DEMO1_WAV, sample_rate=8000)
    assert abs(len(wav8k) - 24000) <= 1
    track = read_audio(DEMO1)  # the clip's own AAC track
    assert abs(len(track) - 48000) <= 640  # within one 25-fps frame
    assert 0.01 < float(np.abs(track).mean()) < 0.5  # speech, not silence


def test_inputs_untouched_by_reading():
    before = {p: sha256(p) for p in (DEMO1, DEMO1_WAV)}
    probe_video(DEMO1)
    next(iter_frames(DEMO1, chunk_size=2))
    read_audio(DEMO1)
    read_audio(DEMO1_WAV)
    assert {p: sha256(p) for p in before} == before


# ---------------------------------------------------------------------------------------------
# full official media (skipped when ../shared/media is absent)
# ---------------------------------------------------------------------------------------------


def test_real_media_probe_and_audio():
    v1 = probe_video(media_file("demo1_video.mp4"))
    assert (v1.fps, v1.num_frames, v1.width, v1.height) == (25.0, 250, 1080, 1920)
    v3 = probe_video(media_file("demo3_video.mp4"))
    assert (v3.fps, v3.num_frames) == (30.0, 600)
    assert len(read_audio(media_file("demo1_audio.wav"))) == 153600


def test_real_media_truncated_moov_at_end(tmp_path):
    src = media_file("demo1_video.mp4")
    data = src.read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(InvalidInputError) as ei:
        probe_video(bad)
    single_line_error(ei, bad)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_error_missing_directory_empty(tmp_path):
    missing = tmp_path / "nope.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path, words in ((missing, "does not exist"), (tmp_path, "directory"), (empty, "empty")):
        for fn in (probe_video, read_audio, lambda p: iter_frames(p)):
            with pytest.raises(InvalidInputError) as ei:
                fn(path)
            assert words in single_line_error(ei, path)


def test_error_truncated_mp4(tmp_path):
    data = DEMO1.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(InvalidInputError) as ei:
        probe_video(bad)
    assert "truncated" in single_line_error(ei, bad)
    with pytest.raises(InvalidInputError):
        iter_frames(bad)


def test_error_not_media_and_no_video_stream(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 64)
    with pytest.raises(InvalidInputError) as ei:
        probe_video(junk)
    single_line_error(ei, junk)
    with pytest.raises(InvalidInputError) as ei:
        probe_video(DEMO1_WAV)
    assert "no video stream" in single_line_error(ei, DEMO1_WAV)


def test_error_no_audio_stream(tmp_path):
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, 25, 32, 32) as w:
        w.write(np.zeros((3, 32, 32, 3), np.uint8))
    with pytest.raises(InvalidInputError) as ei:
        read_audio(silent)
    assert "no audio stream" in single_line_error(ei, silent)


def test_bad_arguments():
    with pytest.raises(InvalidInputError):
        iter_frames(DEMO1, chunk_size=0)
    with pytest.raises(InvalidInputError):
        iter_frames(DEMO1, start=-1)
    with pytest.raises(InvalidInputError):
        read_audio(DEMO1_WAV, sample_rate=0)
    assert issubclass(InvalidInputError, LatentSyncError)


# ---------------------------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------------------------


def test_round_trip_frames_fps_audio(tmp_path):
    frames = smooth_frames(20, 96, 64)
    t = np.arange(12800, dtype=np.float32) / 16000  # 0.8 s
    audio = 0.4 * np.sin(2 * np.pi * 440 * t)
    out = tmp_path / "rt.mp4"
    with VideoWriter(out, 25, 64, 96, audio=audio, sample_rate=16000) as w:
        w.write(frames[:7])
        w.write(frames[7:])
        assert w.num_frames == 20
    info = probe_video(out)
    assert (info.num_frames, info.fps, info.width, info.height) == (20, 25.0, 64, 96)
    back, _ = read_video(out)
    assert back.shape == frames.shape
    assert psnr(back, frames) > 35.0
    audio_back = read_audio(out)
    assert abs(len(audio_back) / 16000 - 0.8) <= 1 / 25
    n = min(len(audio_back), len(audio))
    assert np.corrcoef(audio_back[:n], audio[:n])[0, 1] > 0.99
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert c.streams.audio[0].codec_context.name == "aac"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.mp4"]  # no temp left


def test_ntsc_fps_is_exact(tmp_path):
    out = tmp_path / "ntsc.mp4"
    with VideoWriter(out, 29.97, 32, 32) as w:
        w.write(smooth_frames(6, 32, 32))
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
    assert probe_video(out).fps == pytest.approx(30000 / 1001)


def test_odd_size_is_padded_to_even_and_says_so(tmp_path, caplog):
    frames = smooth_frames(4, 63, 47)
    out = tmp_path / "odd.mp4"
    with caplog.at_level("WARNING", logger="latentsync"):
        with VideoWriter(out, 25, 47, 63) as w:
            assert (w.out_width, w.out_height) == (48, 64)
            w.write(frames)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "47x63" in said[0] and "48x64" in said[0], said
    back, info = read_video(out)
    assert (info.width, info.height) == (48, 64)
    assert psnr(back[:, :63, :47], frames) > 35.0
    # the added column/row repeats the last one of the input
    assert np.abs(back[:, :63, 47].astype(int) - back[:, :63, 46]).mean() < 4


def test_error_removes_temp_and_keeps_previous_output(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 25, 32, 32) as w:
            w.write(np.zeros((5, 32, 32, 3), np.uint8))
            raise RuntimeError("boom in the middle")
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]

    fresh = tmp_path / "fresh.mp4"
    with pytest.raises(InvalidInputError) as ei:
        with VideoWriter(fresh, 25, 32, 32) as w:
            w.write(np.zeros((2, 32, 30, 3), np.uint8))  # wrong width
    assert "expected frames" in str(ei.value)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_refuses_to_overwrite_inputs(tmp_path):
    src = tmp_path / "input.mp4"
    src.write_bytes(DEMO1.read_bytes())
    digest = sha256(src)
    alias = tmp_path / "sub" / ".." / "input.mp4"
    (tmp_path / "sub").mkdir()
    for target in (src, alias):
        with pytest.raises(InvalidInputError) as ei:
            VideoWriter(target, 25, 32, 32, inputs=(src, DEMO1_WAV))
        assert "same file as input" in str(ei.value)
    assert sha256(src) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.mp4", "sub"]


def test_writer_argument_errors(tmp_path):
    with pytest.raises(InvalidInputError):
        VideoWriter(tmp_path / "x.avi", 25, 32, 32)
    with pytest.raises(InvalidInputError):
        VideoWriter(tmp_path / "missing_dir" / "x.mp4", 25, 32, 32)
    with pytest.raises(InvalidInputError):
        VideoWriter(tmp_path / "x.mp4", 0, 32, 32)
    with pytest.raises(InvalidInputError):
        VideoWriter(tmp_path / "x.mp4", 25, 32, 32, audio=np.zeros((3, 100)))
    with pytest.raises(InvalidInputError):
        VideoWriter(tmp_path / "x.mp4", 25, 32, 32).close()  # nothing written
    assert list(tmp_path.iterdir()) == []


def test_rotation_metadata_is_applied(tmp_path):
    """A stream stored landscape with a 90-degree display rotation reads back upright (portrait)."""
    h, w = 48, 80
    img = np.zeros((h, w, 3), np.uint8)
    img[:16, :16] = 255  # white square in the stored top-left corner
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.set_display_rotation(90)  # counter-clockwise
        _encode_all(c, s, [av.VideoFrame.from_ndarray(img, format="rgb24") for _ in range(3)])
    info = probe_video(path)
    assert (info.width, info.height) == (h, w)
    frame = next(iter_frames(path))[0]
    assert frame.shape == (w, h, 3)
    # rotating counter-clockwise by 90 degrees moves the top-left corner to the bottom-left
    assert frame[-16:, :16].mean() > 200 and frame[:16, :16].mean() < 50


def test_read_audio_mp3_stereo_44k(tmp_path):
    """MP3, stereo, 44.1 kHz -> 16 kHz mono; a 440 Hz tone stays a 440 Hz tone of the same length."""
    sr_in, seconds = 44100, 1.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "tone.mp3"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libmp3lame", rate=sr_in)
        s.layout = "stereo"
        frames = []
        for i in range(0, len(tone), 1152):
            block = np.ascontiguousarray(np.stack([tone[i : i + 1152]] * 2))
            frames.append(av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo"))
            frames[-1].sample_rate = sr_in
        _encode_all(c, s, frames, pts_step=1152)
    wav = read_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 16000) <= 1200  # codec delay/padding, under 75 ms
    spectrum = np.abs(np.fft.rfft(wav[2000:14000]))
    assert np.argmax(spectrum) * 16000 / 12000 == pytest.approx(440, abs=3)
    assert 0.3 < np.abs(wav[2000:14000]).max() < 0.6  # stereo of equal channels -> same level


# ---------------------------------------------------------------------------------------------
# hostile inputs (issue 10)
# ---------------------------------------------------------------------------------------------


def _float_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A float32 WAV (``samples`` [T] or [T, C]); the stdlib ``wave`` module writes PCM only."""
    import soundfile as sf

    sf.write(path, samples, rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_audio_refuses_non_finite_samples(tmp_path, bad):
    x = (0.3 * np.sin(np.arange(32000) / 9)).astype(np.float32)
    x[20000] = bad  # 1.25 s at 16 kHz
    path = _float_wav(tmp_path / "bad.wav", x, 16000)
    with pytest.raises(InvalidInputError) as ei:
        read_audio(path)
    msg = single_line_error(ei, path)
    assert "sample 20000" in msg and "1.250 s" in msg and "finite" in msg


def test_read_audio_refuses_all_nan_stereo_44k(tmp_path):
    path = _float_wav(tmp_path / "nan.wav", np.full((22050, 2), np.nan, np.float32), 44100)
    with pytest.raises(InvalidInputError) as ei:
        read_audio(path)
    assert "sample 0 " in single_line_error(ei, path)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_resample_audio_refuses_non_finite_samples(rate):
    w = np.zeros((2, rate), np.float32)
    w[1, rate // 2] = np.nan
    with pytest.raises(InvalidInputError) as ei:
        resample_audio(w[1:] if rate == 16000 else w, rate, 16000, what="input 'audio'")
    msg = str(ei.value)
    assert msg.startswith("input 'audio'") and "0.500 s" in msg and "nan" in msg


def test_still_jpeg_and_png_are_one_frame_videos(tmp_path):
    frame = read_video(DEMO1, max_frames=1)[0][0, ::4, ::4]  # 270x480
    for ext, codec in ((".jpg", "mjpeg"), (".png", "png")):
        path = tmp_path / f"still{ext}"
        with av.open(str(path), "w", format="image2") as c:
            s = c.add_stream(codec, rate=25)
            s.width, s.height = frame.shape[1], frame.shape[0]
            s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "rgb24"
            _encode_all(c, s, [av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")])
        info = probe_video(path)
        assert (info.num_frames, info.width, info.height) == (1, 270, 480), (ext, info)
        back, _ = read_video(path)
        assert back.shape == (1, 480, 270, 3) and psnr(back[0], frame) > 30, ext


def test_unwritable_output_folder_is_refused_when_the_writer_opens(readonly_folder):
    """The muxer creates its file only at the first packet; the writer proves the folder is writable
    up front (a probe file, removed again)."""
    folder = readonly_folder
    with pytest.raises(InvalidInputError) as ei:
        VideoWriter(folder / "out.mp4", 25, 32, 32)
    assert "not writable" in str(ei.value) and str(folder) in str(ei.value)
    assert not any(p.name.startswith(".") and "out" in p.name for p in folder.iterdir())
