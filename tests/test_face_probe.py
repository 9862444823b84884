"""Early no-face check (latentsync.face.probe): a face-less video fails after a probe of a few frames,
a video whose face appears late is still found, and the CLI refuses it before loading any model."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch
import pytest

from latentsync.errors import NoFaceError
from latentsync.face.probe import probe_indices, require_face_in_source
from latentsync.video.io import VideoWriter
from latentsync.video.sources import FileFrames


class BrightIsFace:
    """Stand-in aligner: a frame "has a face" when it is bright; records the frames it was given."""

    def __init__(self):
        self.calls = []

    def align(self, frames, start_index=0):
        self.calls.append(start_index)
        n = frames.shape[0]
        dark = [start_index + i for i in range(n) if float(np.asarray(frames[i]).mean()) < 200]
        return SimpleNamespace(no_face_indices=dark)


def _video(path, n, bright=()):
    frames = np.full((n, 32, 48, 3), 90, np.uint8)
    frames[list(bright)] = 250
    with VideoWriter(path, 25, 48, 32, crf=10) as w:
        w.write(frames)
    return path


def test_probe_indices_cover_the_start_then_sample_the_rest():
    ix = probe_indices(250, 25.0)
    assert list(ix[:50]) == list(range(50)) and len(ix) == 66
    assert np.all(np.diff(ix) > 0) and ix[-1] < 250 and np.diff(ix[50:]).max() <= 13
    assert len(probe_indices(30, 25.0)) == 30  # short video: every frame
    assert len(probe_indices(90000, 25.0)) == 50 + 240  # one hour: capped


def test_faceless_video_fails_after_the_probe_only(tmp_path):
    video = FileFrames.open(_video(tmp_path / "nobody.mp4", 250))
    aligner = BrightIsFace()
    with pytest.raises(NoFaceError) as ei:
        require_face_in_source(video, aligner)
    msg = str(ei.value)
    assert "nobody.mp4" in msg and "first 2.0 s (50 frames)" in msg and "16 frames sampled" in msg
    assert aligner.calls == list(probe_indices(250, 25.0)) and len(aligner.calls) == 66  # not all 250 frames


def test_face_only_late_or_briefly_is_found(tmp_path):
    aligner = BrightIsFace()
    late = FileFrames.open(_video(tmp_path / "late.mp4", 250, bright=range(200, 215)))  # 0.6 s of face at 8 s
    found = require_face_in_source(late, aligner)
    assert 200 <= found < 215 and len(aligner.calls) < 66
    aligner = BrightIsFace()
    first = FileFrames.open(_video(tmp_path / "first.mp4", 250, bright=range(250)))
    assert require_face_in_source(first, aligner) == 0 and aligner.calls == [0]


def test_in_memory_source_is_probed_the_same_way():
    """An IMAGE-like source without a file: walked chunk by chunk, the same frames probed."""
    frames = torch.full((250, 8, 8, 3), 90, dtype=torch.uint8)
    source = SimpleNamespace(num_frames=250, fps=None, name="input 'images'",
                             chunks=lambda chunk=16: (frames[s:s + chunk] for s in range(0, 250, chunk)))
    aligner = BrightIsFace()
    with pytest.raises(NoFaceError, match="input 'images': no face found in the first 2.0 s"):
        require_face_in_source(source, aligner)
    assert len(aligner.calls) == 66
    frames[225:235] = 255  # 0.4 s of face near the end
    assert require_face_in_source(source, BrightIsFace()) == 231


def test_cli_refuses_a_faceless_video_before_loading_models(tmp_path, capsys):
    import soundfile as sf

    from latentsync.cli import main

    video = _video(tmp_path / "grey.mp4", 250)
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(16000 * 10, np.float32), 16000, subtype="PCM_16")
    out = tmp_path / "out.mp4"
    t0 = time.monotonic()
    rc = main(["infer", "--video", str(video), "--audio", str(wav), "--output", str(out), "--tiny-random",
               "--resolution", "256", "--steps", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no face found" in err and "grey.mp4" in err, err
    assert "loading models" not in err and not out.exists()
    assert time.monotonic() - t0 < 60
