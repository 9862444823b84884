"""Step ``affine`` (spec 4 step 6): every frame aligned to the face template at ``resolution``
with our face stage (:class:`latentsync.face.FaceAligner`, a fresh tracker per video, unlike the
official per-process aligner that carries smoothing state across videos, spec 7.15); a video with
any frame without a face is filtered out (as the official step). Audio is kept; frames are
written with libx264 at ``crf`` 13.
"""

from __future__ import annotations

from pathlib import Path

from training.preprocess.common import Filtered, Options, StepFailed, probe_clip, write_clip

FOLDER = "affine_transformed"


def process(src: Path, out_dir: Path, rel: Path, opts: Options) -> tuple[list[Path], dict]:
    from latentsync.face.aligner import FaceAligner
    from latentsync.video.io import iter_frames

    info, audio = probe_clip(src, opts.sample_rate)
    fps = float(info.fps)
    aligner = FaceAligner(opts.resolution, fps=fps, download=False)
    n_frames = 0
    try:
        faces, missing = [], []  # aligned faces only (R x R): the full frames are streamed
        for chunk in iter_frames(src, chunk_size=16):
            crops = aligner.align(chunk, start_index=n_frames)
            n_frames += len(chunk)
            missing += list(crops.no_face_indices)
            if missing:
                break
            faces.append(crops.faces.numpy())
    except Exception as exc:  # landmarker errors
        raise StepFailed(f"face alignment failed: {exc}") from exc
    finally:
        close = getattr(aligner, "close", None)
        if close:
            close()
    if missing:
        raise Filtered(f"no face in frame {missing[0]} (every frame must have a face)")
    out = out_dir / rel
    r = opts.resolution
    audio = audio[: int(round(n_frames * opts.sample_rate / fps))]
    write_clip(out, faces, fps, r, r, audio, opts.sample_rate, opts.crf, inputs=[src], preset=opts.preset)
    return [out], {"frames": n_frames}
