"""Rebuild the example clips in this folder from the official LatentSync demo media.

Usage (from the repository root)::

    python examples/make_examples.py /path/to/LatentSync/assets

The folder must hold ``demo1_video.mp4``, ``demo1_audio.wav`` and ``demo3_video.mp4`` from the
official repository (commit a229c394). Frames are decoded and re-encoded with this package's own
PyAV reader/writer (H.264 + AAC, original 1080x1920 size); the WAV is cut sample-exactly.
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from latentsync.video.io import VideoWriter, iter_frames, probe_video, read_audio

HERE = Path(__file__).resolve().parent

# (source video, output name, seconds, crf); crf chosen so each file stays well under 1.5 MB.
CLIPS = [
    ("demo1_video.mp4", "demo1_3s.mp4", 3.0, 23),
    ("demo3_video.mp4", "demo3_30fps_2s.mp4", 2.0, 25),
]
AUDIO_CUTS = [("demo1_audio.wav", "demo1_3s.wav", 3.0)]


def cut_video(src: Path, dst: Path, seconds: float, crf: int) -> None:
    info = probe_video(src)
    n = int(round(seconds * info.fps))
    audio = read_audio(src, 16000)[: int(round(seconds * 16000))]  # the clip's own speech, mono
    with VideoWriter(dst, info.fps, info.width, info.height, audio=audio, crf=crf, preset="slow",
                     inputs=(src,)) as w:
        done = 0
        for chunk in iter_frames(src, chunk_size=16):
            take = min(len(chunk), n - done)
            w.write(chunk[:take])
            done += take
            if done >= n:
                break


def cut_wav(src: Path, dst: Path, seconds: float) -> None:
    with wave.open(str(src), "rb") as r:
        params = r.getparams()
        frames = r.readframes(int(round(seconds * params.framerate)))
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("assets", type=Path, help="folder with the official demo media")
    args = ap.parse_args()
    for src, dst, seconds, crf in CLIPS:
        cut_video(args.assets / src, HERE / dst, seconds, crf)
        print(dst, probe_video(HERE / dst), (HERE / dst).stat().st_size, "bytes")
    for src, dst, seconds in AUDIO_CUTS:
        cut_wav(args.assets / src, HERE / dst, seconds)
        print(dst, len(read_audio(HERE / dst)), "samples", (HERE / dst).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
