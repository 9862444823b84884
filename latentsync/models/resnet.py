"""Per-frame convolutions, the 3D residual block and the resamplers of the LatentSync U-Net.

"3D" here means (spec 2.2): every convolution is an ordinary 2-D convolution applied to each frame
independently (frames folded into the batch), while the GroupNorms of the residual blocks keep the
frame axis, i.e. their statistics are taken over all frames of a chunk jointly. Weights therefore
have exactly the shapes of Stable Diffusion 1.5's 2-D U-Net.

All tensors in this module are video feature maps ``[B, C, F, H, W]`` (batch, channels, frames,
height, width) in the model dtype (float32, float16 or bfloat16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, F, H, W]`` -> ``[B*F, C, H, W]`` (batch-major: row ``b*F + f``)."""
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[B*F, C, H, W]`` -> ``[B, C, F, H, W]``; inverse of :func:`fold_frames`."""
    bf, c, h, w = x.shape
    return x.reshape(bf // num_frames, num_frames, c, h, w).transpose(1, 2)


class FrameConv2d(nn.Conv2d):
    """A ``Conv2d`` applied to every frame of a ``[B, C, F, H, W]`` tensor (spec 2.2).

    The parameters are those of a plain ``nn.Conv2d`` (weight ``[C_out, C_in, k, k]``), so SD-1.5
    and LatentSync checkpoints load unchanged. Output: ``[B, C_out, F, H', W']``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return unfold_frames(super().forward(fold_frames(x)), x.shape[2])


class ResnetBlock3D(nn.Module):
    """Pre-norm residual block with a time-embedding shift (spec 2.2).

    ``GN -> SiLU -> conv3x3 -> + Linear(SiLU(temb)) -> GN -> SiLU -> dropout -> conv3x3``, plus a
    1x1 ``conv_shortcut`` when the channel count changes. Both GroupNorms see the whole 5-D tensor,
    so their statistics span all frames of the chunk (not per frame).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        temb_channels: width of the time embedding (4 x block_out_channels[0], 1280 for LatentSync).
        groups: GroupNorm groups (``norm_num_groups``, 32).
        eps: GroupNorm epsilon (``norm_eps``, 1e-5).
        dropout: dropout probability between the convolutions (0 in LatentSync).
        output_scale_factor: the sum ``shortcut + residual`` is divided by it (1 everywhere here).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int = 32,
        eps: float = 1e-5,
        dropout: float = 0.0,
        output_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.output_scale_factor = output_scale_factor
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = FrameConv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = FrameConv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = (
            FrameConv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x ``[B, C_in, F, H, W]``, temb ``[B, temb_channels]`` -> ``[B, C_out, F, H, W]``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (shortcut + h) / self.output_scale_factor


class Downsample3D(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution per frame (key ``downsamplers.0.conv``).

    ``[B, C, F, H, W]`` -> ``[B, C, F, ceil(H/2), ceil(W/2)]`` (``padding=1``, ``downsample_padding``).
    """

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest x2 on H and W only (frames untouched), then a 3x3 convolution per frame.

    ``[B, C, F, H, W]`` -> ``[B, C, F, 2H, 2W]`` (key ``upsamplers.0.conv``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling has no bf16 kernel on some backends
            x = x.float()
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest").to(dtype)
        return self.conv(x)
