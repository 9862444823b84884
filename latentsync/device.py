"""Where and how the models run: device, inference dtype, GPU-only speed settings (spec 1.3).

The CPU float32 path is the parity reference and is left exactly as the official code computes it.
On CUDA:

* **dtype**: bfloat16 where the GPU supports it (Ampere and newer, compute capability >= 8: the same
  GPUs on which the official code picks float16; bf16 has float32's range, so the SD VAE cannot
  overflow to inf/NaN as it can in fp16), float16 on compute capability 7.x (Volta/Turing tensor cores),
  float32 below. ``--dtype float16`` reproduces the official choice on Ampere+.
* **attention**: every attention call is ``torch.nn.functional.scaled_dot_product_attention``
  (:mod:`latentsync.models.attention`), which picks the flash or memory-efficient kernel by itself for
  half-precision CUDA tensors (head width <= 256, last dimension contiguous) -- nothing to switch.
* **channels_last** (NHWC) for the VAE, which is made of 2-D convolutions only: cuDNN's tensor-core
  convolutions are NHWC kernels, so NCHW inputs pay a layout transpose around every convolution. The
  U-Net is left NCHW: its convolutions see frames folded into the batch between 5-D reshapes and
  GroupNorms over frames, where NHWC tensors would be copied back and forth (not measured on a GPU).
* **torch.compile** of the U-Net, off by default (first chunk pays the compilation, minutes for the
  full-size U-Net; a shorter last chunk compiles once more).
* ``cudnn.benchmark`` (the chunk shapes repeat, so the autotuned kernels are reused), set by the CLI
  for its own process only.
"""

from __future__ import annotations

import torch

from latentsync.errors import InvalidInputError


def default_device_and_dtype(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """Inference device and dtype.

    Args:
        device: ``None`` (CUDA when available, else CPU), or a device name such as ``"cuda:1"``.

    Returns:
        ``(device, dtype)``: CPU -> float32; CUDA -> bfloat16 on compute capability >= 8, float16 on
        7.x, float32 below (see the module docstring).

    Raises:
        InvalidInputError: CUDA requested but not available.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda":
        return device, torch.float32
    if not torch.cuda.is_available():
        raise InvalidInputError("device: 'cuda' was requested but no CUDA device is available")
    major, _ = torch.cuda.get_device_capability(device)
    if major >= 8 and torch.cuda.is_bf16_supported():
        return device, torch.bfloat16
    return device, (torch.float16 if major == 7 else torch.float32)


def prepare_models(unet, vae, device: torch.device, channels_last: bool | None = None, compile: bool = False):
    """Apply the GPU speed settings in place; the CPU reference path is unchanged by default.

    Args:
        unet: ``UNet3DConditionModel`` already on ``device`` / its inference dtype.
        vae: ``AutoencoderKL`` already on ``device``.
        device: the inference device.
        channels_last: NHWC weights for the VAE; ``None`` = on for CUDA, off for CPU.
        compile: ``torch.compile`` the U-Net's forward (``nn.Module.compile``, in place); off by default.

    Returns:
        ``(unet, vae)``, the same objects.
    """
    if channels_last is None:
        channels_last = torch.device(device).type == "cuda"
    if channels_last:
        vae.to(memory_format=torch.channels_last)
    if compile:
        unet.compile()
    return unet, vae
