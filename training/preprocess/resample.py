"""Step ``resample`` (spec 4 step 2): video to 25 fps, audio to 16 kHz mono; a broken input is
recorded as failed (the official step 1 deletes it in place; we never touch inputs).

Frame-rate conversion picks, for output frame k (time k/25 s), the source frame nearest in time
(``round(k * fps_src / 25)``), like ffmpeg's ``fps`` filter; a 25-fps input keeps every frame (it is
still re-encoded, once, at ``crf``). Audio: PyAV/libswresample to ``sample_rate`` mono.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.preprocess.common import Options, StepFailed, write_clip

FOLDER = "resampled"


def resample_indices(num_src: int, fps_src: float, fps_out: float) -> np.ndarray:
    """Source frame index of every output frame, int64 ``[floor(num_src * fps_out / fps_src)]``."""
    n_out = int(np.floor(num_src * fps_out / fps_src + 1e-9))
    idx = np.floor(np.arange(n_out) * fps_src / fps_out + 0.5).astype(np.int64)
    return np.clip(idx, 0, num_src - 1)


def process(src: Path, out_dir: Path, rel: Path, opts: Options) -> tuple[list[Path], dict]:
    from latentsync.errors import InvalidInputError
    from latentsync.video.io import iter_frames, probe_video, read_audio

    try:
        info = probe_video(src)
        audio = read_audio(src, sample_rate=opts.sample_rate)
    except InvalidInputError as exc:
        raise StepFailed(f"broken input (video or audio cannot be decoded): {exc}") from exc
    idx = resample_indices(info.num_frames, info.fps, opts.fps)
    if idx.size == 0:
        raise StepFailed("video has no frames")

    def frames():
        want = 0
        base = 0
        for chunk in iter_frames(src, chunk_size=32):
            sel = []
            while want < idx.size and idx[want] < base + len(chunk):
                sel.append(idx[want] - base)
                want += 1
            if sel:
                yield chunk[np.asarray(sel)]
            base += len(chunk)
        if want < idx.size:  # fewer decodable frames than probed: repeat the last one
            yield np.repeat(chunk[-1:], idx.size - want, axis=0)

    out = out_dir / rel
    n_samples = int(round(idx.size * opts.sample_rate / opts.fps))
    try:
        write_clip(out, frames(), opts.fps, info.width, info.height, audio[:n_samples], opts.sample_rate,
                   18, inputs=[src], preset=opts.preset)
    except InvalidInputError as exc:
        raise StepFailed(f"cannot decode/encode: {exc}") from exc
    return [out], {"fps_in": info.fps, "frames_in": info.num_frames, "frames_out": int(idx.size),
                   "audio_s": round(audio.size / opts.sample_rate, 3)}
