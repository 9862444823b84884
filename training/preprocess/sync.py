"""Step ``sync`` (spec 4 step 8): keep videos whose audio and lips agree, with the offset fixed.

Uses our StableSyncNet (``--syncnet-checkpoint``, config ``--syncnet-config``) through
:func:`training.eval.sync_conf.sync_scores` (the official step uses SyncNet v2, which this project
does not include, so confidences live on a different scale: the default threshold here is
``sync_conf_threshold`` on StableSyncNet's Sync-C, see the CLI help). A video is kept when
``confidence >= threshold`` and ``|offset| <= max_offset``; a non-zero offset is corrected by
shifting the audio by ``offset`` frames (dropping audio at the start and padding silence at the end
when the audio lags, the reverse when it leads) so that the measured offset becomes 0.

Without a checkpoint the step cannot run: :func:`check` raises :class:`StepSkipped` and the
pipeline passes the previous folder on (reported in the summary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.preprocess.common import (Filtered, Options, StepFailed, copy_file, read_clip,
                                        require_model_file, write_clip)

FOLDER = "av_synced"
_MODEL: dict = {}


def check(opts: Options) -> None:
    require_model_file(opts.syncnet_checkpoint, "sync", "--syncnet-checkpoint", "StableSyncNet weights absent",
                       "SyncNet checkpoint")


def _model(opts: Options):
    key = (opts.syncnet_checkpoint, opts.syncnet_config)
    if key not in _MODEL:
        from training.eval.common import load_syncnet_from_config

        _MODEL.clear()
        _MODEL[key] = load_syncnet_from_config(opts.syncnet_checkpoint, opts.syncnet_config or None)
    return _MODEL[key]


def shift_audio(audio: np.ndarray, offset_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """Move the audio ``offset_frames`` earlier (positive) or later (negative), same length."""
    k = int(round(abs(offset_frames) * sample_rate / fps))
    if k == 0:
        return audio
    pad = np.zeros(k, audio.dtype)
    return np.concatenate([audio[k:], pad]) if offset_frames > 0 else np.concatenate([pad, audio[:-k]])


def process(src: Path, out_dir: Path, rel: Path, opts: Options) -> tuple[list[Path], dict]:
    import torch

    from latentsync.audio.mel import syncnet_mel_spectrogram
    from training.eval.sync_conf import sync_scores

    frames, audio, fps = read_clip(src, opts.sample_rate)
    if audio.size == 0:
        raise StepFailed("no audio track")
    model, res = _model(opts)
    mel = syncnet_mel_spectrogram(audio).float()
    max_off = max(int(opts.sync_search_offset), int(opts.max_offset))
    try:
        with torch.no_grad():
            s = sync_scores(model, frames, mel, res, fps, max_offset=max_off, stride=2)
    except ValueError as exc:
        raise Filtered(f"too short for sync scoring: {exc}") from exc
    info = {"sync_c": round(s["sync_c"], 4), "sync_d": round(s["sync_d"], 4), "offset": s["offset"]}
    if s["sync_c"] < opts.sync_conf_threshold:
        raise Filtered(f"sync confidence {s['sync_c']:.3f} < {opts.sync_conf_threshold}")
    if abs(s["offset"]) > opts.max_offset:
        raise Filtered(f"offset {s['offset']} frames exceeds {opts.max_offset}")
    out = out_dir / rel
    if s["offset"] == 0:
        return [copy_file(src, out)], info
    h, w = frames.shape[1:3]
    write_clip(out, frames, fps, w, h, shift_audio(audio, s["offset"], fps, opts.sample_rate),
               opts.sample_rate, opts.crf, inputs=[src], preset=opts.preset)
    return [out], info
