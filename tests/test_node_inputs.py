"""IMAGE / AUDIO values handed to the nodes: what has one meaning is converted, the rest is refused
with a message naming the input, what was found and what is expected (nodes/comfy_convert.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from latentsync.errors import InvalidInputError

# comfy_convert needs only torch/numpy; loaded on its own, without the ComfyUI stand-ins of test_nodes.py
_spec = importlib.util.spec_from_file_location("comfy_convert", REPO_ROOT / "nodes" / "comfy_convert.py")
convert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert)


@pytest.mark.parametrize("images, words", [
    (torch.full((2, 8, 8, 3), 200, dtype=torch.uint8), ["uint8", "0..1", "200..200", "divide by 255"]),
    (torch.ones((2, 8, 8, 3), dtype=torch.int64), ["int64", "floats in 0..1"]),
    (torch.full((2, 8, 8, 3), 200.0), ["0..1", "200..200", "0..255", "divide by 255"]),
    (torch.linspace(-1, 1, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3), ["-1..1", "(x + 1) / 2"]),
])
def test_images_of_another_dtype_or_scale_are_refused(images, words):
    with pytest.raises(ValueError) as ei:
        convert.check_image(images, "images")
    msg = str(ei.value)
    assert msg.startswith("input 'images'") and all(w in msg for w in words), msg


def test_nan_pixels_are_refused_naming_the_frame():
    images = torch.rand(40, 8, 8, 3)
    images[33, 1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="frame 33 has NaN"):
        convert.check_image(images, "images")
    images[33, 1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match="frame 33 has NaN or infinite"):
        convert.check_image(images, "images")


def test_grey_and_rgba_are_converted_and_overshoot_clamped():
    grey = torch.rand(3, 8, 8, 1)
    u = convert.image_to_uint8(convert.check_image(grey))
    assert u.shape == (3, 8, 8, 3) and torch.equal(u[..., 0], u[..., 2])
    assert torch.equal(u[..., 1], (grey[..., 0] * 255).round().to(torch.uint8))
    rgba = torch.rand(2, 8, 8, 4)
    assert torch.equal(convert.image_to_uint8(convert.check_image(rgba)), convert.image_to_uint8(rgba[..., :3]))
    ringing = torch.full((1, 8, 8, 3), 1.04)
    ringing[0, 0, 0] = -0.03
    u = convert.image_to_uint8(convert.check_image(ringing))
    assert u.max() == 255 and u.min() == 0


def test_audio_empty_batch_integer_samples_and_nan_are_refused():
    with pytest.raises(ValueError, match="AUDIO batch is empty"):
        convert.audio_to_mono_16k({"waveform": torch.zeros(0, 1, 16000), "sample_rate": 16000})
    with pytest.raises(ValueError, match="expected float samples.*int16"):
        convert.audio_to_mono_16k({"waveform": torch.zeros(1, 1, 16000, dtype=torch.int16), "sample_rate": 16000})
    for rate in (16000, 48000):
        w = torch.zeros(1, 2, rate)
        w[0, 1, rate // 4] = float("nan")
        with pytest.raises(InvalidInputError) as ei:
            convert.audio_to_mono_16k({"waveform": w if rate == 48000 else w[:, 1:], "sample_rate": rate})
        assert str(ei.value).startswith("input 'audio'") and "0.250 s" in str(ei.value)
    ok = convert.audio_to_mono_16k({"waveform": torch.zeros(1, 2, 48000), "sample_rate": 48000})
    assert ok.dtype == np.float32 and abs(len(ok) - 16000) < 100
