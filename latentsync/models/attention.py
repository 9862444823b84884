"""Spatial transformer of the LatentSync U-Net, with audio cross-attention (spec 2.3).

Frames are folded into the batch: each frame's ``H*W`` positions form one token sequence, which
self-attends (``attn1``) and then cross-attends to that frame's own 50 audio tokens (``attn2``,
keys/values from 384-wide Whisper-tiny features). This cross-attention is the only path by which
audio enters the U-Net.

:class:`Attention` and :class:`FeedForward` are shared with the temporal layers
(:mod:`latentsync.models.motion_module`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentsync.models.resnet import fold_frames, unfold_frames

# The CUDA flash / memory-efficient SDPA kernels put the batch on a grid dimension limited to 65535
# (pytorch/pytorch#146704, "invalid configuration argument"). Temporal attention has one sequence per
# spatial position (B*H*W), so large latents can exceed it; such batches are split into pieces.
_MAX_SDPA_BATCH = 32768


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled-dot-product attention with ``heads`` heads, scale ``1/sqrt(head_dim)``.

    Args:
        q: ``[N, L, D]`` queries; k, v: ``[N, S, D]`` keys / values (``D = heads * head_dim``).
        heads: number of heads.

    Returns:
        ``[N, L, D]``, same dtype as ``q``.
    """
    n, length, dim = q.shape
    head_dim = dim // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    if n > _MAX_SDPA_BATCH:
        step = _MAX_SDPA_BATCH
        pieces = [slice(i, i + step) for i in range(0, n, step)]
        out = torch.cat([F.scaled_dot_product_attention(q[s], k[s], v[s]) for s in pieces])
    else:
        out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(n, length, dim)


class Attention(nn.Module):
    """Multi-head attention: q/k/v projections without bias, output projection with bias.

    Keys: ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (diffusers naming).

    Args:
        query_dim: width of the query tokens (the feature channels C).
        heads: number of heads.
        head_dim: width of one head (``heads * head_dim`` is the inner width, = C here).
        context_dim: width of the key/value tokens for cross-attention (384 for audio), or None for
            self-attention.
    """

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner_dim = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[N, L, query_dim]``, context ``[N, S, context_dim]`` (None: x) -> ``[N, L, query_dim]``."""
        context = x if context is None else context
        out = multi_head_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """``Linear(dim, 2*inner)`` split into value and gate; returns ``value * GELU(gate)`` (key ``proj``)."""

    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward ``C -> 4C -> C`` (keys ``net.0.proj``, ``net.2``); ``[..., C] -> [..., C]``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner_dim = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner_dim), nn.Dropout(dropout), nn.Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Self-attention, audio cross-attention and GEGLU feed-forward, each pre-LayerNorm + residual.

    ``x += attn1(norm1(x))``; ``x += attn2(norm2(x), audio)`` (skipped when no audio is given);
    ``x += ff(norm3(x))`` (spec 2.3).

    Args:
        dim: token width C.
        heads: number of heads (config ``attention_head_dim``, 8); head width ``C // heads``.
        cross_attention_dim: audio token width (384).
    """

    def __init__(self, dim: int, heads: int, cross_attention_dim: int) -> None:
        super().__init__()
        head_dim = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=cross_attention_dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B*F, H*W, C]``; encoder_hidden_states ``[B*F, S, cross_attention_dim]`` -> ``[B*F, H*W, C]``."""
        x = self.attn1(self.norm1(x)) + x
        if encoder_hidden_states is not None:
            x = self.attn2(self.norm2(x), encoder_hidden_states) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Per-frame spatial transformer with audio cross-attention (keys ``attentions.N.*``, spec 2.3).

    ``GroupNorm(eps 1e-6)`` per frame -> 1x1 conv ``proj_in`` -> one :class:`BasicTransformerBlock`
    over the ``H*W`` tokens of each frame -> 1x1 conv ``proj_out`` -> + input.

    Args:
        channels: feature channels C (320 / 640 / 1280 in the full model).
        heads: number of heads (the config's ``attention_head_dim``, which LatentSync uses as a
            head count); head width ``C // heads``.
        cross_attention_dim: audio token width (384).
        norm_groups: GroupNorm groups (``norm_num_groups``).
    """

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, norm_groups: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, cross_attention_dim)])
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, C, F, H, W]``; encoder_hidden_states ``[B*F, S, D]`` (row ``b*F + f``) or None.

        Returns ``[B, C, F, H, W]``.
        """
        num_frames = x.shape[2]
        residual = fold_frames(x)
        bf, c, h, w = residual.shape
        tokens = self.proj_in(self.norm(residual)).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        for block in self.transformer_blocks:
            tokens = block(tokens, encoder_hidden_states)
        out = self.proj_out(tokens.reshape(bf, h, w, c).permute(0, 3, 1, 2))
        return unfold_frames(out + residual, num_frames)
