"""Step ``quality`` (spec 4 step 9): a pluggable visual-quality filter.

The official filter is hyperIQA (KonIQ-10k weights, scores 0-100, keep >= 40) on the first, middle
and last frames. Any scorer can be plugged in as a TorchScript file (``--quality-model``): it receives
float ``[3, 3, 224, 224]`` (the three frames, centre-cropped to 224 after a resize of the short side
to 224, [0, 1] then ImageNet mean/std) and returns ``[3]`` or ``[3, 1]`` scores; the mean must reach
``--quality-threshold`` (40). Without a model the step is skipped with a message and the previous
folder is passed on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.preprocess.common import Filtered, Options, copy_file, read_clip, require_model_file

FOLDER = "high_visual_quality"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MODEL: dict = {}


def check(opts: Options) -> None:
    require_model_file(opts.quality_model, "quality", "--quality-model", "hyperIQA-like scorer absent",
                       "quality model")


def score_frames(model, frames: np.ndarray) -> float:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    s = 224 / min(h, w)
    x = F.interpolate(x, size=(max(224, round(h * s)), max(224, round(w * s))), mode="bilinear",
                      align_corners=False, antialias=True)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    x = x[..., top:top + 224, left:left + 224]
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return float(model(x).float().mean())


def process(src: Path, out_dir: Path, rel: Path, opts: Options) -> tuple[list[Path], dict]:
    import torch

    if opts.quality_model not in _MODEL:
        _MODEL.clear()
        _MODEL[opts.quality_model] = torch.jit.load(opts.quality_model, map_location="cpu").eval()
    frames, audio, fps = read_clip(src, opts.sample_rate)
    pick = frames[[0, len(frames) // 2, len(frames) - 1]]
    score = score_frames(_MODEL[opts.quality_model], pick)
    if score < opts.quality_threshold:
        raise Filtered(f"quality score {score:.2f} < {opts.quality_threshold}")
    return [copy_file(src, out_dir / rel)], {"quality": round(score, 3)}
