"""Shared machinery of the data pipeline steps (spec 4): items, manifests, resumable step runs.

A step reads every ``.mp4`` of an input folder (recursively) and writes its results into its own
folder ``<output>/<step.folder>/`` keeping the relative layout. It records one JSON line per input in
``<output>/<step.folder>/manifest.jsonl``::

    {"input": "a/b.mp4", "status": "ok" | "filtered" | "failed", "outputs": ["a/b_000.mp4"],
     "reason": "...", "info": {...}}

An input that already has a record is not processed again (resume after an interruption).
Inputs are only read: outputs go through :class:`latentsync.video.io.VideoWriter` (temporary file +
rename, refusing to overwrite an input), and nothing is ever deleted from an input folder (the
official pipeline deletes broken videos in place, spec 7.15).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from latentsync.errors import InvalidInputError, LatentSyncError

__all__ = ["StepFailed", "Filtered", "StepSkipped", "Step", "Options", "list_inputs", "run_step",
           "write_clip", "read_clip"]


class StepFailed(Exception):
    """The input could not be processed (corrupt, no face, ...); recorded as ``failed``."""


class Filtered(Exception):
    """The input was processed but rejected by a filter; recorded as ``filtered``."""


class StepSkipped(LatentSyncError):
    """The whole step cannot run (e.g. its model is absent); the pipeline passes its input on."""


@dataclass
class Options:
    """Pipeline options (CLI flags of :mod:`training.preprocess.run`)."""

    fps: int = 25
    sample_rate: int = 16000
    resolution: int = 256
    shot_threshold: float = 0.35  # histogram detector: 1 - correlation of HSV histograms
    shot_detector: str = "auto"  # auto (PySceneDetect if installed) | scenedetect | histogram
    min_shot_seconds: float = 2.0
    segment_seconds: float = 5.0
    min_segment_seconds: float = 2.0
    syncnet_checkpoint: str = ""
    syncnet_config: str = ""
    sync_conf_threshold: float = 3.0
    max_offset: int = 6  # keep |offset| <= this many frames (official 6)
    sync_search_offset: int = 15  # offsets scanned: -15 .. 15 frames (official)
    quality_model: str = ""
    quality_threshold: float = 40.0
    crf: int = 13
    preset: str = "fast"  # libx264 preset of every written clip ("ultrafast" for quick runs)
    extra: dict = field(default_factory=dict)


@dataclass
class Step:
    name: str
    folder: str
    process: Callable[[Path, Path, Path, Options], tuple[list[Path], dict]]
    check: Callable[[Options], None] | None = None  # raises StepSkipped when it cannot run


def list_inputs(folder: Path) -> list[Path]:
    """Relative paths of the ``.mp4`` files under ``folder`` (sorted; hidden files ignored)."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*.mp4")
                  if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _load_manifest(path: Path) -> dict[str, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["input"]] = rec
            except (json.JSONDecodeError, KeyError):
                continue  # a torn last line after a crash: redo that item
    return done


def run_step(step: Step, in_dir: Path, out_root: Path, opts: Options,
             log: Callable[[dict], None] = lambda r: None) -> dict[str, Any]:
    """Run one step over ``in_dir``; returns a summary ``{"step", "output_dir", "ok", "filtered",
    "failed", "resumed", "failures": [{"input", "reason"}]}``."""
    out_dir = out_root / step.folder
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    done = _load_manifest(manifest)
    counts = {"ok": 0, "filtered": 0, "failed": 0, "resumed": 0}
    failures = []
    with open(manifest, "a", encoding="utf-8") as fh:
        for rel in list_inputs(in_dir):
            key = rel.as_posix()
            if key in done:
                counts["resumed"] += 1
                rec = done[key]
            else:
                t0 = time.time()
                try:
                    outputs, info = step.process(in_dir / rel, out_dir, rel, opts)
                    rec = {"input": key, "status": "ok",
                           "outputs": [o.relative_to(out_dir).as_posix() for o in outputs], "info": info}
                except Filtered as exc:
                    rec = {"input": key, "status": "filtered", "outputs": [], "reason": str(exc)}
                except (StepFailed, InvalidInputError) as exc:
                    rec = {"input": key, "status": "failed", "outputs": [], "reason": str(exc)}
                rec["seconds"] = round(time.time() - t0, 2)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                log({"event": "item", "step": step.name, **rec})
            counts[rec["status"]] += 1
            if rec["status"] == "failed":
                failures.append({"input": key, "reason": rec.get("reason", "")})
    return {"step": step.name, "output_dir": str(out_dir), **counts, "failures": failures}


# --------------------------------------------------------------------------------------------------
# Clip I/O helpers


def read_clip(path: Path, sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray, float]:
    """Whole video (uint8 ``[N, H, W, 3]``), its audio (float32 ``[T]`` at ``sample_rate``; empty if
    the file has no audio) and fps.

    Raises:
        StepFailed: undecodable video.
    """
    from latentsync.video.io import read_audio, read_video

    try:
        frames, info = read_video(path)
    except InvalidInputError as exc:
        raise StepFailed(f"cannot decode video: {exc}") from exc
    if len(frames) == 0:
        raise StepFailed("video has no frames")
    try:
        audio = read_audio(path, sample_rate=sample_rate)
    except InvalidInputError:
        audio = np.zeros(0, np.float32)
    return frames, audio, float(info.fps)


def write_clip(path: Path, frames: np.ndarray | Iterable[np.ndarray], fps: float, width: int, height: int,
               audio: np.ndarray | None, sample_rate: int, crf: int, inputs: Iterable[Path],
               preset: str = "fast") -> Path:
    """Write frames (+ audio cut to the video duration) atomically with H.264 + AAC."""
    from latentsync.video.io import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = [frames] if isinstance(frames, np.ndarray) else frames
    with VideoWriter(path, fps=fps, width=width, height=height,
                     audio=audio if audio is not None and audio.size else None, sample_rate=sample_rate,
                     crf=crf, inputs=tuple(inputs), preset=preset) as w:
        for c in chunks:
            w.write(c)
    return path


def audio_slice(audio: np.ndarray, start_frame: int, num_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """Samples of video frames ``start .. start + num - 1`` (zero-padded at the end if short)."""
    a = int(round(start_frame * sample_rate / fps))
    b = int(round((start_frame + num_frames) * sample_rate / fps))
    out = audio[a:b]
    if out.size < b - a and audio.size:
        out = np.concatenate([out, np.zeros(b - a - out.size, np.float32)])
    return out


def require_model_file(value: str | None, step: str, option: str, absent: str, what: str) -> None:
    """Raise :class:`StepSkipped` when a step's model file ``value`` (CLI ``option``) is not given
    (message names ``absent``) or is not a file (message names ``what``)."""
    if not value:
        raise StepSkipped(f"{step} step skipped: no {option} given ({absent})")
    if not Path(value).is_file():
        raise StepSkipped(f"{step} step skipped: {what} {value!r} not found")


def copy_file(src: Path, dst: Path) -> Path:
    """Byte copy ``src`` -> ``dst`` via a temporary name + rename (no re-encode)."""
    import shutil

    from training.engine import atomic_write

    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp), tmp_prefix=".")


def probe_clip(src: Path, sample_rate: int = 16000):
    """``(VideoInfo, audio float32 [T])`` without decoding the frames (audio empty if absent).

    Raises:
        StepFailed: unreadable video.
    """
    from latentsync.video.io import probe_video, read_audio

    try:
        info = probe_video(src)
    except InvalidInputError as exc:
        raise StepFailed(f"cannot decode video: {exc}") from exc
    try:
        audio = read_audio(src, sample_rate=sample_rate)
    except InvalidInputError:
        audio = np.zeros(0, np.float32)
    return info, audio


def write_ranges(src: Path, ranges: list[tuple[int, int]], paths: list[Path], info, audio: np.ndarray,
                 opts: "Options", crf: int = 18) -> list[Path]:
    """Stream ``src`` once and write frame ranges ``[(start, end_exclusive)]`` (sorted, disjoint) to
    ``paths`` with their audio; memory stays at one decoded chunk."""
    from latentsync.video.io import VideoWriter, iter_frames

    fps = float(info.fps)
    jobs = sorted(zip(ranges, paths))
    k, writer, base = 0, None, 0
    try:
        for chunk in iter_frames(src, chunk_size=32):
            lo, hi = base, base + len(chunk)
            while k < len(jobs) and lo < hi:
                (a, b), path = jobs[k]
                if hi <= a:
                    break
                if writer is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writer = VideoWriter(path, fps=fps, width=info.width, height=info.height,
                                         audio=audio_slice(audio, a, b - a, fps, opts.sample_rate) if audio.size else None,
                                         sample_rate=opts.sample_rate, crf=crf, inputs=(src,), preset=opts.preset)
                s, e = max(a, lo), min(b, hi)
                if e > s:
                    writer.write(chunk[s - base:e - base])
                if b <= hi:
                    writer.close()
                    writer = None
                    k += 1
                    lo = b
                else:
                    break
            base = hi
    finally:
        if writer is not None:
            writer.abort()
    return [p for (_, p) in jobs[:k]]
