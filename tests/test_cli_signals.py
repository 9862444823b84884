"""SIGTERM / SIGHUP stop the CLI as Ctrl-C does: exit 128 + signal, nothing left behind.

Each test starts ``python -m latentsync infer --tiny-random`` in a subprocess with its own TMPDIR,
waits until the job holds the temporary files in question, sends the signal and checks that the
partial output, the loop spill and the tiny-checkpoint folder are gone and a previous output survives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO_ROOT

VIDEO = REPO_ROOT / "examples" / "demo1_3s.mp4"  # 75 frames; 4 s of audio -> looped, so spilled


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    if not VIDEO.exists():
        pytest.skip("examples/demo1_3s.mp4 not present")
    tmpdir, out_dir = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    out_dir.mkdir()
    wav = tmp_path / "speech.wav"
    t = np.arange(4 * 16000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, subtype="PCM_16")
    (out_dir / "result.mp4").write_bytes(b"previous result")
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "latentsync", "infer", "--video", str(VIDEO), "--audio", str(wav),
           "--output", str(out_dir / "result.mp4"), "--tiny-random", "--resolution", "256", "--steps", "1",
           "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, tmpdir, out_dir


def _wait_for(proc: subprocess.Popen, found, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not found():
        if proc.poll() is not None:
            pytest.fail(f"the job ended (rc {proc.returncode}) before the files appeared: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the temporary files never appeared")
        time.sleep(0.1)


def _stop_and_check(proc: subprocess.Popen, sig: int, tmpdir: Path, out_dir: Path) -> str:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job did not stop after the signal")
    assert proc.returncode == 128 + sig, err[-2000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and signal.Signals(sig).name in errors[0] and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.mp4"]  # no hidden partial output
    assert (out_dir / "result.mp4").read_bytes() == b"previous result"
    # no spill, no tiny-checkpoint folder (torch's own compile cache folder is not the job's and stays)
    assert [p for p in tmpdir.iterdir() if not p.name.startswith("torchinductor_")] == []
    return errors[0]


@pytest.mark.slow  # about a minute: models, Whisper and the first aligned chunk before the spill exists
def test_sigterm_during_the_looped_job_cleans_up(tmp_path):
    proc, tmpdir, out_dir = _start(tmp_path)

    def spilling() -> bool:
        spill = [p for p in tmpdir.glob("latentsync-*") if not p.name.startswith("latentsync-tiny-")]
        return any((p / "frames.u8").exists() and (p / "frames.u8").stat().st_size > 0 for p in spill)

    _wait_for(proc, spilling)
    _stop_and_check(proc, signal.SIGTERM, tmpdir, out_dir)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_while_the_tiny_checkpoints_are_written_cleans_up(tmp_path):
    proc, tmpdir, out_dir = _start(tmp_path)
    _wait_for(proc, lambda: any(p.is_dir() and any(p.rglob("*")) for p in tmpdir.glob("latentsync-tiny-*")))
    _stop_and_check(proc, signal.SIGHUP, tmpdir, out_dir)


@pytest.mark.slow  # about a minute: tiny models, Whisper and the first chunk
def test_backend_job_cancelled_by_its_callback_leaves_nothing(tmp_path):
    """LipSyncPipeline (the backend job the CLI and API users run): a callback that raises once the
    looped job has spilled frames and written its first chunk (a cancel) leaves no output, no spill."""
    from latentsync.models.tiny import write_tiny_checkpoint_dir
    from latentsync.pipeline.lipsync import LipSyncPipeline
    from latentsync.weights import resolve_weights

    if not VIDEO.exists():
        pytest.skip("examples/demo1_3s.mp4 not present")
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(4 * 16000, np.float32), 16000, subtype="PCM_16")
    weights = resolve_weights(write_tiny_checkpoint_dir(tmp_path / "ckpt"), 256, download=False)
    pipe = LipSyncPipeline.from_weights(weights, resolution=256)
    scratch, out_dir = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    out_dir.mkdir()
    (out_dir / "result.mp4").write_bytes(b"previous result")

    class Cancel(Exception):
        pass

    def callback(p):
        if p.stage == "frames":
            assert any(scratch.rglob("*.u8"))  # the loop spill exists at this point
            raise Cancel

    with pytest.raises(Cancel):
        pipe(VIDEO, wav, out_dir / "result.mp4", num_inference_steps=1, callback=callback, tmp_dir=scratch)
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.mp4"]
    assert (out_dir / "result.mp4").read_bytes() == b"previous result"
