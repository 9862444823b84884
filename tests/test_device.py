"""Device and dtype choice, and the GPU speed switches (CUDA mocked: no GPU here)."""

from __future__ import annotations

import pytest
import torch

from latentsync.device import default_device_and_dtype, prepare_models
from latentsync.errors import InvalidInputError


def _fake_cuda(monkeypatch, major: int, bf16: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_cpu_is_float32():
    assert default_device_and_dtype("cpu") == (torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("major, bf16, expected", [
    (9, True, torch.bfloat16),  # Hopper
    (8, True, torch.bfloat16),  # Ampere / Ada
    (7, False, torch.float16),  # Volta / Turing
    (6, False, torch.float32),  # Pascal
])
def test_cuda_dtype_by_compute_capability(monkeypatch, major, bf16, expected):
    _fake_cuda(monkeypatch, major, bf16)
    assert default_device_and_dtype("cuda:0") == (torch.device("cuda:0"), expected)
    assert default_device_and_dtype(None)[0].type == "cuda"


def test_cuda_requested_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidInputError, match="no CUDA device is available"):
        default_device_and_dtype("cuda")


def test_speed_switches_off_on_cpu_and_compile_in_place():
    unet, vae = torch.nn.Conv2d(3, 3, 3), torch.nn.Conv2d(3, 3, 3)
    prepare_models(unet, vae, torch.device("cpu"))
    assert vae.weight.is_contiguous() and unet._compiled_call_impl is None
    prepare_models(unet, vae, torch.device("cpu"), compile=True)
    assert unet._compiled_call_impl is not None and vae._compiled_call_impl is None
