"""Step ``segment`` (spec 4 step 4): cut shots into 5-10 s segments ``<name>_<nnn>.mp4``.

The official step uses ffmpeg's segment muxer (5 s, cuts at key frames, hence 5-10 s pieces). Here
the cut is frame-exact: ``floor(duration / 5)`` segments of 5 s, the remainder appended to the last
one (so every segment is 5-10 s); a clip shorter than 5 s stays whole if it is at least
``min_segment_seconds`` long, otherwise it is filtered out.
"""

from __future__ import annotations

from pathlib import Path

from training.preprocess.common import Filtered, Options, probe_clip, write_ranges

FOLDER = "segmented"


def segment_ranges(num_frames: int, fps: float, seconds: float = 5.0, min_seconds: float = 2.0) -> list[tuple[int, int]]:
    """``[(start, end_exclusive)]``: pieces of ``seconds`` with the remainder merged into the last."""
    seg = int(round(seconds * fps))
    if num_frames < seg:
        return [(0, num_frames)] if num_frames >= int(round(min_seconds * fps)) else []
    k = num_frames // seg
    bounds = [i * seg for i in range(k)] + [num_frames]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def process(src: Path, out_dir: Path, rel: Path, opts: Options) -> tuple[list[Path], dict]:
    info, audio = probe_clip(src, opts.sample_rate)
    fps = float(info.fps)
    ranges = segment_ranges(info.num_frames, fps, opts.segment_seconds, opts.min_segment_seconds)
    if not ranges:
        raise Filtered(f"{info.num_frames / fps:.2f} s is shorter than {opts.min_segment_seconds} s")
    paths = [out_dir / rel.parent / f"{rel.stem}_{n:03d}.mp4" for n in range(len(ranges))]
    outputs = write_ranges(src, ranges, paths, info, audio, opts)
    return outputs, {"segments": [list(r) for r in ranges]}
