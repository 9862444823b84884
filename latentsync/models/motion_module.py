"""Temporal layers ("motion modules") of the LatentSync 1.5/1.6 U-Net (spec 2.4).

Each module attends across the frames of a chunk at every spatial position: tokens are regrouped to
``[B*H*W, F, C]``, a fixed sinusoidal position encoding of the frame index is added before each
attention, and the output projection ``proj_out`` is zero-initialised so that a fresh module is an
identity. Key layout (``motion_modules.N.``)::

    temporal_transformer.{norm, proj_in, proj_out}
    temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}.{to_q,to_k,to_v,to_out.0,pos_encoder.pe}
    temporal_transformer.transformer_blocks.0.{norms.{0,1}, ff.net.0.proj, ff.net.2, ff_norm}
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentsync.errors import InvalidInputError
from latentsync.models.attention import Attention, FeedForward
from latentsync.models.resnet import fold_frames

#: Defaults of the official ``motion_module_kwargs`` (spec 2.1).
DEFAULT_MOTION_MODULE_KWARGS: dict = {
    "num_attention_heads": 8,
    "num_transformer_block": 1,
    "attention_block_types": ["Temporal_Self", "Temporal_Self"],
    "temporal_position_encoding": True,
    "temporal_position_encoding_max_len": 24,
    "temporal_attention_dim_div": 1,
    "zero_initialize": True,
}


def sinusoidal_table(length: int, channels: int) -> torch.Tensor:
    """float32 CPU ``[1, length, channels]``: even channels ``sin(t / 10000^(2i/C))``, odd channels ``cos``."""
    position = torch.arange(length, dtype=torch.float32, device="cpu").unsqueeze(1)
    even_channels = torch.arange(0, channels, 2, dtype=torch.float32, device="cpu")
    div_term = torch.exp(even_channels * (-math.log(10000.0) / channels))
    table = torch.zeros(1, length, channels, device="cpu")
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Adds a fixed sin/cos encoding of the frame index to ``[N, F, C]`` tokens.

    ``pe[0, t, 2i] = sin(t / 10000^(2i/C))``, ``pe[0, t, 2i+1] = cos(...)``; stored as the persistent
    buffer ``pe`` of shape ``[1, max_len, C]`` (it is part of official checkpoints).
    """

    def __init__(self, channels: int, max_len: int = 24) -> None:
        super().__init__()
        self.register_buffer("pe", torch.empty(1, max_len, channels), persistent=True)
        # The table is computed on the CPU and copied in, so that building under
        # ``with torch.device("meta")`` stays cheap (meta-device fills would pull in torch's decompositions).
        with torch.no_grad():
            self.pe.copy_(sinusoidal_table(max_len, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[N, F, C]`` with ``F <= max_len`` -> ``x + pe[:, :F]``."""
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention across frames, with the position encoding added to its (normalised) input.

    Input and output ``[B*H*W, F, C]``.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, max_len: int | None) -> None:
        super().__init__(channels, heads, head_dim)
        self.pos_encoder = SinusoidalPositionalEncoding(channels, max_len) if max_len else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        return super().forward(x)


class TemporalTransformerBlock(nn.Module):
    """``x += attn_i(norms[i](x))`` for each temporal self-attention, then ``x += ff(ff_norm(x))``.

    Tokens ``[B*H*W, F, C]`` (one sequence of F frames per spatial position).
    """

    def __init__(
        self, channels: int, heads: int, head_dim: int, num_attention_blocks: int, max_len: int | None
    ) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(channels, heads, head_dim, max_len) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    """GroupNorm per frame -> Linear ``proj_in`` -> temporal blocks -> Linear ``proj_out`` -> + input."""

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        num_layers: int,
        num_attention_blocks: int,
        max_len: int | None,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        inner_dim = heads * head_dim
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(inner_dim, heads, head_dim, num_attention_blocks, max_len)
            for _ in range(num_layers)
        )
        self.proj_out = nn.Linear(inner_dim, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, F, H, W]`` -> ``[B, C, F, H, W]``."""
        b, c, f, h, w = x.shape
        normed = self.norm(fold_frames(x))  # [B*F, C, H, W], statistics per frame
        # [B*F, C, H, W] -> [B, H*W, F, C] -> [B*H*W, F, C]: one sequence over frames per position
        tokens = normed.reshape(b, f, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, f, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        out = tokens.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)
        return out + x


class VanillaTemporalModule(nn.Module):
    """One motion module (``motion_module_type: Vanilla``), keys ``temporal_transformer.*`` (spec 2.4).

    Args:
        channels: feature channels C of the level it sits in.
        num_attention_heads: heads (8); head width ``C // heads // temporal_attention_dim_div``.
        num_transformer_block: temporal transformer blocks (1).
        attention_block_types: one entry per attention sub-block; only ``"Temporal_Self"`` exists.
        temporal_position_encoding: add the sinusoidal frame encoding (True).
        temporal_position_encoding_max_len: most frames a chunk may have (24); also the ``pe`` length.
        temporal_attention_dim_div: divides the head width (1).
        zero_initialize: zero ``proj_out`` so a fresh module is an identity (True).
        norm_groups: GroupNorm groups (32, fixed by the official code).

    Raises:
        InvalidInputError: for attention types other than ``Temporal_Self``.
    """

    def __init__(
        self,
        channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        attention_block_types: list[str] | tuple[str, ...] = ("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding: bool = True,
        temporal_position_encoding_max_len: int = 24,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        unsupported = [t for t in attention_block_types if t != "Temporal_Self"]
        if unsupported:
            raise InvalidInputError(
                f"motion_module_kwargs.attention_block_types: expected only 'Temporal_Self', found {unsupported}"
            )
        head_dim = channels // num_attention_heads // temporal_attention_dim_div
        self.temporal_transformer = TemporalTransformer3DModel(
            channels,
            num_attention_heads,
            head_dim,
            num_layers=num_transformer_block,
            num_attention_blocks=len(attention_block_types),
            max_len=temporal_position_encoding_max_len if temporal_position_encoding else None,
            norm_groups=norm_groups,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, C, F, H, W]`` -> ``[B, C, F, H, W]`` (F at most ``temporal_position_encoding_max_len``)."""
        return self.temporal_transformer(x)
