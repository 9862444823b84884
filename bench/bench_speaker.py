"""Benchmark: active-speaker choice (``--face auto``) on two-person clips made from the demo clips.

For each pair of demo clips (A, B) and each placement (A left / B right, and swapped), builds a
side-by-side clip: both sources scaled to the same height (``--height``, default 960), cut to the
shorter one's length, at the lower frame rate; where a source runs at another rate its frames are
picked by timestamp (output frame ``k`` at ``k / fps`` shows the source frame whose interval holds
that time). The clip is written as H.264 (crf 18) to ``--out-dir`` and decoded back, as the CLI
would read it. Each clip is scanned once (:meth:`FaceAligner.scan_faces`), then the speaker is
chosen with each source's own speech (the soundtrack inside that demo mp4, 16 kHz, in sync with the
person's mouth; not the ``demoN_audio.wav`` dubbing targets).

Prints one JSON object: per clip and speech, ``pick_rate`` (fraction of frames whose chosen face
lies on the speech owner's side, over the frames where the owner's face was found),
``first_window_rate`` (the same over the first ``WINDOW_S`` seconds), ``first_pick_frame`` (first
frame at which the owner is chosen), ``switches`` (changes of the chosen track),
``other_face_frames`` (frames where the other person was lip-synced), ``no_face_frames`` (frames
passed through because the chosen face was not found there), the number of tracks and the scan
speed.

Usage::

    nice -n 10 .venv/bin/python bench/bench_speaker.py [--pairs 1,3 1,2 2,3] [--out-dir /tmp/i11]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentsync.face.aligner import FaceAligner  # noqa: E402
from latentsync.face.speaker import WINDOW_S, choose_speaker, speech_envelope  # noqa: E402
from latentsync.video.io import VideoWriter, iter_frames, probe_video, read_audio  # noqa: E402

MEDIA = Path(os.environ.get("LATENTSYNC_SHARED_DIR", REPO.parent / "shared")) / "media"
SAMPLE_RATE = 16000


def frames_at(path: Path, src_fps: float, fps: float, num: int, height: int):
    """Yield ``num`` frames of ``path`` resized to ``height``, the one showing time ``k / fps`` each."""
    import cv2

    want = np.floor(np.arange(num) * src_fps / fps + 1e-9).astype(np.int64)
    k, index = 0, 0
    for chunk in iter_frames(path, chunk_size=16):
        for frame in chunk:
            while k < num and want[k] == index:
                width = int(round(frame.shape[1] * height / frame.shape[0])) // 2 * 2
                yield cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
                k += 1
            index += 1
            if k >= num:
                return


def build_clip(left: int, right: int, out: Path, height: int) -> tuple[Path, float, int]:
    """Write the side-by-side clip of demo ``left`` | demo ``right``; returns (path, fps, frames)."""
    paths = [MEDIA / f"demo{i}_video.mp4" for i in (left, right)]
    infos = [probe_video(p) for p in paths]
    fps = min(i.fps for i in infos)
    num = int(np.floor(min(i.duration_s for i in infos) * fps + 1e-9))
    if out.exists():
        return out, fps, num
    gens = [frames_at(p, i.fps, fps, num, height) for p, i in zip(paths, infos)]
    first = [next(g) for g in gens]
    width = sum(f.shape[1] for f in first)
    with VideoWriter(out, fps=fps, width=width, height=height, crf=18, preset="veryfast") as writer:
        writer.write(np.concatenate(first, axis=1)[None])
        for pair in zip(*gens):
            writer.write(np.concatenate(pair, axis=1)[None])
    return out, fps, num


def measure(clip: Path, fps: float, sides: dict[int, str]) -> dict:
    """Scan ``clip`` once and choose the speaker with each demo's own speech."""
    info = probe_video(clip)
    with FaceAligner(256, fps=fps, download=False) as aligner:
        t0 = time.perf_counter()
        tracks = aligner.scan_faces(iter_frames(clip, chunk_size=16))
        scan_s = time.perf_counter() - t0
    centres_x = (tracks.boxes[:, :, 0] + tracks.boxes[:, :, 2]) / 2  # [T, N]
    window = int(round(WINDOW_S * fps))
    result = {"frames": len(tracks), "tracks": tracks.num_tracks, "scan_ms_per_frame": round(1000 * scan_s / len(tracks), 1)}
    for demo, side in sides.items():
        speech = read_audio(MEDIA / f"demo{demo}_video.mp4", SAMPLE_RATE)
        env = speech_envelope(speech, SAMPLE_RATE, fps, len(tracks))
        ids = choose_speaker(tracks, env, fps)
        on_left = np.array([centres_x[t, i] < info.width / 2 if t >= 0 else False for i, t in enumerate(ids)])
        owner_present = np.any(tracks.present() & ((centres_x < info.width / 2) == (side == "left")), axis=0)
        correct = (on_left == (side == "left")) & (ids >= 0)
        chosen = ids[ids >= 0]
        hits = np.flatnonzero(correct)
        result[f"speech_demo{demo}_{side}"] = {
            "pick_rate": round(float(correct[owner_present].mean()), 4),
            "first_window_rate": round(float(correct[:window][owner_present[:window]].mean()), 4),
            "first_pick_frame": int(hits[0]) if hits.size else None,
            "switches": int(np.count_nonzero(np.diff(chosen))),
            "other_face_frames": int(np.count_nonzero((ids >= 0) & ~correct)),
            "no_face_frames": int(np.count_nonzero(ids < 0)),
            "owner_face_frames": int(owner_present.sum()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["1,3", "1,2", "2,3"], help="demo pairs A,B")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/i11"))
    parser.add_argument("--height", type=int, default=960)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"window_s": WINDOW_S, "clips": {}}
    rates = []
    for pair in args.pairs:
        a, b = (int(v) for v in pair.split(","))
        for left, right in ((a, b), (b, a)):
            clip, fps, _ = build_clip(left, right, args.out_dir / f"demo{left}_demo{right}.mp4", args.height)
            res = measure(clip, fps, {left: "left", right: "right"})
            report["clips"][clip.name] = res
            rates += [v["pick_rate"] for k, v in res.items() if k.startswith("speech_")]
            print(json.dumps({clip.name: res}), file=sys.stderr)
    report["min_pick_rate"] = min(rates)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
