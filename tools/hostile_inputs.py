"""Hostile-input table: run ``python -m latentsync infer`` on bad and odd inputs and report each outcome.

Not a CI test (it takes minutes): a check to run by hand after touching input handling. Every case
runs the CLI in a child process with its own TMPDIR and output folder, made from the committed clips
in ``examples/``. Per case it prints the exit code, the one-line message, whether an output exists,
temporary leftovers (TMPDIR and the output folder) and whether any input file changed; then the
totals and a JSON summary.

A case expects either a clear error (exit 2, or 128 + signal for a signal; exactly one ``error:``
line, no traceback, no output, a previous output untouched) or a correct output (exit 0; frame count,
size and audio track checked). Anything else is counted as a traceback or a silent wrong output.
The goal is zero tracebacks, silent wrong outputs and leftovers.

Usage::

    nice -n 10 .venv/bin/python tools/hostile_inputs.py [--work /tmp/latentsync-hostile] [--only NAME ...]
        [--skip-full] [--json table.json]

``--skip-full`` leaves out the cases that run the whole (tiny random) pipeline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXAMPLE_VIDEO = REPO / "examples" / "demo1_3s.mp4"
EXAMPLE_AUDIO = REPO / "examples" / "demo1_3s.wav"
IGNORED_TMP = ("torchinductor_",)  # torch's own compile cache folder, not the job's


@dataclass
class Case:
    """One CLI run. ``expect``: "error", "ok" or "any" (either a clear error or a correct output);
    ``check`` validates an output (returns a problem or "")."""

    name: str
    args: list[str]
    expect: str = "error"
    full: bool = False  # runs the whole pipeline (minutes on a loaded CPU)
    signal_after: tuple[int, Callable[[Path], bool]] | None = None
    check: Callable[[Path], str] | None = None
    env: dict = field(default_factory=dict)
    module: str = "latentsync"


# ------------------------------------------------------------------------------------------------
# media made from the examples


def _wav(path: Path, x: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> Path:
    import soundfile as sf

    sf.write(path, x, rate, subtype=subtype)
    return path


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _encode(path: Path, frames: np.ndarray, pix_fmt: str = "yuv420p", codec: str = "libx264", fmt=None) -> Path:
    import av

    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


def make_media(d: Path) -> dict[str, Path]:
    import av

    from latentsync.models.tiny import write_tiny_checkpoint_dir
    from latentsync.video.io import read_video

    d.mkdir(parents=True, exist_ok=True)
    for marker in ("MARKER_unet", "MARKER_resume"):
        (d / marker).unlink(missing_ok=True)
    m: dict[str, Path] = {"video": EXAMPLE_VIDEO, "audio": EXAMPLE_AUDIO}
    frames, _ = read_video(EXAMPLE_VIDEO, max_frames=25)
    small = frames[:, ::4, ::4]  # 270x480
    m["speech1s"] = _wav(d / "speech_1s.wav", _tone(1.0))
    m["speech4s"] = _wav(d / "speech_4s.wav", _tone(4.0))
    m["empty_wav"] = _wav(d / "empty.wav", np.zeros(0, np.float32))
    m["short_wav"] = _wav(d / "short.wav", np.zeros(200, np.float32))
    x = _tone(1.0)
    x[8000] = np.nan
    m["nan_wav"] = _wav(d / "nan.wav", x, subtype="FLOAT")
    m["all_nan_wav"] = _wav(d / "all_nan.wav", np.full(8000, np.nan, np.float32), subtype="FLOAT")
    x = _tone(1.0)
    x[4000:4100] = np.inf
    m["inf_wav"] = _wav(d / "inf_48k.wav", np.repeat(x, 3), 48000, subtype="FLOAT")
    m["zero_bytes"] = d / "zero.mp4"
    m["zero_bytes"].write_bytes(b"")
    data = EXAMPLE_VIDEO.read_bytes()
    m["truncated"] = d / "truncated.mp4"
    m["truncated"].write_bytes(data[: len(data) // 3])
    m["garbage"] = d / "garbage.mp4"
    m["garbage"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    m["text_mp4"] = d / "notes.mp4"
    m["text_mp4"].write_text("this is not a video\n")
    m["garbage_wav"] = d / "garbage.wav"
    m["garbage_wav"].write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(64))
    m["silent_video"] = _encode(d / "no_audio_track.mp4", small[:10])
    m["grey"] = _encode(d / "grey.mp4", np.full((50, 128, 160, 3), 128, np.uint8))
    m["odd"] = _encode(d / "odd_271x481.mkv", np.ascontiguousarray(
        np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(271, 481).to_ndarray() for f in frames])),
        pix_fmt="yuv444p")
    m["jpeg"] = _encode(d / "still.jpg", small[:1], pix_fmt="yuvj420p", codec="mjpeg", fmt="image2")
    m["png"] = _encode(d / "still.png", small[:1], pix_fmt="rgb24", codec="png", fmt="image2")
    m["unicode"] = d / "vidéo été 🎬.mp4"
    shutil.copy(EXAMPLE_VIDEO, m["unicode"])
    m["symlink"] = d / "link_to_video.mp4"
    if not m["symlink"].exists():
        m["symlink"].symlink_to(EXAMPLE_VIDEO)
    ckpt = d / "ckpt_crafted"
    if not ckpt.exists():
        write_tiny_checkpoint_dir(ckpt)
        _crafted_pickle(ckpt / "latentsync_unet.pt", d / "MARKER_unet")
    m["ckpt_crafted"] = ckpt
    m["marker_unet"] = d / "MARKER_unet"
    m["ckpt_empty"] = d / "ckpt_empty"
    m["ckpt_empty"].mkdir(exist_ok=True)
    ckpt = d / "ckpt_truncated"
    if not ckpt.exists():
        write_tiny_checkpoint_dir(ckpt)
        p = ckpt / "latentsync_unet.pt"
        p.write_bytes(p.read_bytes()[:4096])
    m["ckpt_truncated"] = ckpt
    runs = d / "train_run" / "checkpoints"
    runs.mkdir(parents=True, exist_ok=True)
    _crafted_pickle(runs / "checkpoint-1.resume.pt", d / "MARKER_resume")
    (runs / "checkpoint-1.pt").write_bytes((runs / "checkpoint-1.resume.pt").read_bytes())
    m["train_run"] = d / "train_run"
    m["marker_resume"] = d / "MARKER_resume"
    return m


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _crafted_pickle(path: Path, marker: Path) -> None:
    import torch

    torch.save({"global_step": 1, "state_dict": {}, "checkpoint": "checkpoint-1.pt", "optimizer": {},
                "rng": [], "x": _Payload(marker)}, path)


# ------------------------------------------------------------------------------------------------
# checks of ok outputs


def _output_check(frames: int, size: tuple[int, int]) -> Callable[[Path], str]:
    def check(out: Path) -> str:
        from latentsync.video.io import probe_video, read_audio

        info = probe_video(out)
        if (info.width, info.height) != size:
            return f"size {info.width}x{info.height}, expected {size[0]}x{size[1]}"
        if abs(info.num_frames - frames) > 1:
            return f"{info.num_frames} frames, expected {frames}"
        if read_audio(out).shape[0] < 8000:
            return "audio track missing or short"
        return ""

    return check


def _spilling(tmp: Path) -> bool:
    return any((p / "frames.u8").exists() for p in tmp.glob("latentsync-*") if not p.name.startswith("latentsync-tiny-"))


def _tiny_written(tmp: Path) -> bool:
    return any(any(p.rglob("*.pt")) for p in tmp.glob("latentsync-tiny-*"))


def cases(m: dict[str, Path], out: str) -> list[Case]:
    from latentsync.video.timeline import num_output_frames

    V, A = str(m["video"]), str(m["audio"])
    n1s = num_output_frames(16000, 25.0)  # output frames for 1 s of speech at 25 fps (official rule: 27)
    base = ["--output", out, "--resolution", "256", "--steps", "1", "--quiet"]
    tiny = [*base, "--tiny-random"]

    def io(video, audio, *extra, tiny_random=True):
        return ["infer", "--video", str(video), "--audio", str(audio), *(tiny if tiny_random else base), *extra]

    offline = {"HF_HUB_OFFLINE": "1"}
    rel = "./examples/../examples/" + EXAMPLE_VIDEO.name  # the child runs in the repository root
    return [
        # video input
        Case("video missing", io(m["video"].with_name("nope.mp4"), A)),
        Case("video is a folder", io(m["video"].parent, A)),
        Case("video 0 bytes", io(m["zero_bytes"], A)),
        Case("video truncated", io(m["truncated"], A)),
        Case("video garbage bytes", io(m["garbage"], A)),
        Case("video is a text file", io(m["text_mp4"], A)),
        Case("video is a WAV", io(m["audio"], A)),
        Case("video without any face", io(m["grey"], m["speech1s"])),
        Case("video still JPEG", io(m["jpeg"], m["speech1s"]), "ok", True, check=_output_check(n1s, (270, 480))),
        Case("video still PNG", io(m["png"], m["speech1s"]), "ok", True, check=_output_check(n1s, (270, 480))),
        Case("video odd size 271x481", io(m["odd"], m["speech1s"]), "ok", True, check=_output_check(n1s, (272, 482))),
        Case("video unicode path", io(m["unicode"], m["speech1s"]), "ok", True, check=_output_check(n1s, (1080, 1920))),
        # audio input
        Case("audio missing", io(V, m["audio"].with_name("nope.wav"))),
        Case("audio 0 bytes", io(V, m["zero_bytes"])),
        Case("audio WAV with 0 samples", io(V, m["empty_wav"])),
        Case("audio shorter than a frame", io(V, m["short_wav"])),
        Case("audio garbage WAV", io(V, m["garbage_wav"])),
        Case("audio float WAV with a NaN", io(V, m["nan_wav"])),
        Case("audio all NaN", io(V, m["all_nan_wav"])),
        Case("audio inf at 48 kHz", io(V, m["inf_wav"])),
        Case("audio from a video without audio", io(V, m["silent_video"])),
        # output
        Case("output == video", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output", V]),
        Case("output == video (relative)", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output", rel]),
        Case("output == video (symlink)", ["infer", "--video", str(m["symlink"]), "--audio", A, *tiny[2:],
                                            "--output", V]),
        Case("output == audio (./ spelling)", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output",
                                               str(EXAMPLE_AUDIO.parent / "." / EXAMPLE_AUDIO.name)]),
        Case("output is a folder", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output", str(Path(out).parent)]),
        Case("output folder missing", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output",
                                       str(Path(out).parent / "missing" / "o.mp4")]),
        Case("output folder not writable", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output", "/sys/o.mp4"]),
        Case("output .avi", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output", out[:-4] + ".avi"]),
        Case("output without extension", ["infer", "--video", V, "--audio", A, *tiny[2:], "--output", out[:-4]]),
        # arguments
        Case("--resolution 300", io(V, A, "--resolution", "300")),
        Case("--steps 0", io(V, A, "--steps", "0")),
        Case("--steps 5000", io(V, A, "--steps", "5000")),
        Case("--steps abc", io(V, A, "--steps", "abc")),
        Case("--guidance-scale 0.5", io(V, A, "--guidance-scale", "0.5")),
        Case("--guidance-scale nan", io(V, A, "--guidance-scale", "nan")),
        Case("--seed -2", io(V, A, "--seed", "-2")),
        Case("--seed 2**64", io(V, A, "--seed", str(2**64))),
        Case("--crf 99", io(V, A, "--crf", "99")),
        Case("--device tpu", io(V, A, "--device", "tpu")),
        Case("--device cuda (none here)", io(V, A, "--device", "cuda")),
        Case("--dtype float64", io(V, A, "--dtype", "float64")),
        Case("--dtype float16 on the CPU", io(V, m["speech1s"], "--dtype", "float16"), "any", True,
             check=_output_check(n1s, (1080, 1920))),
        Case("unknown option", io(V, A, "--fast")),
        Case("missing --video", ["infer", "--audio", A, "--output", out]),
        Case("no command", []),
        # weights
        Case("checkpoint folder empty (offline)", io(V, A, "--checkpoint-dir", str(m["ckpt_empty"]), tiny_random=False),
             env=offline),
        Case("checkpoint folder is a file", io(V, A, "--checkpoint-dir", A, tiny_random=False), env=offline),
        Case("checkpoint truncated", io(V, A, "--checkpoint-dir", str(m["ckpt_truncated"]), tiny_random=False),
             env=offline),
        Case("checkpoint pickle with code", io(V, A, "--checkpoint-dir", str(m["ckpt_crafted"]), tiny_random=False),
             env=offline),
        # signals
        Case("SIGTERM while looping", io(V, m["speech4s"]), full=True, signal_after=(signal.SIGTERM, _spilling)),
        Case("SIGINT while looping", io(V, m["speech4s"]), full=True, signal_after=(signal.SIGINT, _spilling)),
        Case("SIGHUP while writing tiny weights", io(V, m["speech4s"]), signal_after=(signal.SIGHUP, _tiny_written)),
        # training
        Case("training resume from a crafted file", ["--config", str(REPO / "training" / "configs" / "tiny_syncnet.yaml"),
                                                      f"data.train_output_dir={m['train_run']}", "run.resume_from=latest"],
             module="training.train_syncnet"),
    ]


# ------------------------------------------------------------------------------------------------
# running


def _digest(p: Path) -> str:
    if not p.is_file():
        return ""
    return hashlib.sha256(p.read_bytes()).hexdigest()


def run_case(case: Case, work: Path, media: dict[str, Path], out: Path) -> dict:
    tmp = work / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    previous = b"previous output"
    out.write_bytes(previous)
    inputs = [p for k, p in media.items() if p.is_file()]
    before = {p: _digest(p) for p in inputs}
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **case.env}
    cmd = [sys.executable, "-m", case.module, *case.args]
    t0 = time.monotonic()
    # SIGINT back to its default in the child: a shell starts background jobs with SIGINT ignored, and
    # Python then never turns Ctrl-C into KeyboardInterrupt (as in a terminal, where it is not ignored)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if case.signal_after is not None:
        sig, ready = case.signal_after
        while proc.poll() is None and not ready(tmp):
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(sig)
    try:
        stdout, stderr = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    rc = proc.returncode
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    message = errors[-1] if errors else (stdout.strip().splitlines() or [""])[-1]
    traceback = "Traceback (most recent call last)" in stderr
    out_exists = out.exists() and out.read_bytes() != previous
    leftovers = sorted(str(p.relative_to(work)) for p in tmp.iterdir() if not p.name.startswith(IGNORED_TMP))
    leftovers += sorted(str(p.relative_to(work)) for p in out.parent.iterdir() if p != out)
    changed = sorted(p.name for p in inputs if _digest(p) != before[p])
    marker = [k for k in ("marker_unet", "marker_resume") if media[k].exists()]
    wanted_rc = 128 + case.signal_after[0] if case.signal_after is not None else (0 if case.expect == "ok" else 2)
    problem = ""
    if traceback or rc not in (wanted_rc, 0, 2):
        verdict = "traceback"  # a crash, a deep error or a signal that was not handled
    elif rc == 0:
        try:
            problem = (case.check(out) if case.check else "") if out_exists else "exit 0 but no output"
        except Exception as exc:  # an unreadable output
            problem = f"output unreadable: {exc}"
        ok = case.expect in ("ok", "any") and not problem and case.signal_after is None
        verdict = "ok" if ok else "silent wrong output"
    elif len(errors) != 1 or out_exists or not out.exists() or marker:
        verdict = "silent wrong output"  # several/no error lines, a (partial) output, or the old one lost
    else:
        verdict = "clear error" if case.expect in ("error", "any") else "unexpected error"
    return {"case": case.name, "rc": rc, "expected_rc": wanted_rc, "message": message[:160], "output": out_exists,
            "leftovers": leftovers, "inputs_changed": changed + marker, "verdict": verdict, "problem": problem,
            "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/latentsync-hostile")
    ap.add_argument("--only", nargs="*", default=None, help="case names (substrings) to run")
    ap.add_argument("--skip-full", action="store_true", help="leave out cases that run the whole pipeline")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    work = Path(args.work)
    media = make_media(work / "media")
    out = work / "out" / "result.mp4"
    rows = []
    for case in cases(media, str(out)):
        if args.only and not any(s in case.name for s in args.only):
            continue
        if args.skip_full and case.full:
            continue
        row = run_case(case, work, media, out)
        rows.append(row)
        print(f"{row['case'][:36]:36s} rc={row['rc']:>4} {row['verdict']:20s} out={'y' if row['output'] else 'n'} "
              f"left={len(row['leftovers'])} changed={len(row['inputs_changed'])} {row['seconds']:6.1f}s  "
              f"{row['message']}", flush=True)
    totals = {
        "cases": len(rows),
        "clear_errors": sum(r["verdict"] == "clear error" for r in rows),
        "correct_outputs": sum(r["verdict"] == "ok" for r in rows),
        "unexpected_errors": sum(r["verdict"] == "unexpected error" for r in rows),
        "tracebacks": sum(r["verdict"] == "traceback" for r in rows),
        "silent_wrong_outputs": sum(r["verdict"] == "silent wrong output" for r in rows),
        "leftovers": sum(bool(r["leftovers"]) for r in rows),
        "inputs_changed": sum(bool(r["inputs_changed"]) for r in rows),
    }
    print(json.dumps(totals))
    if args.json:
        Path(args.json).write_text(json.dumps({"totals": totals, "rows": rows}, indent=1))
    return 0 if totals["tracebacks"] == totals["silent_wrong_outputs"] == totals["leftovers"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
