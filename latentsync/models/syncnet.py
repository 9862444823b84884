"""StableSyncNet: the audio/visual lip-sync expert of LatentSync (spec 2.6, Appendix A.2).

Two convolutional towers map a 16-frame mouth clip and its mel-spectrogram window to unit vectors in
the same space; the cosine of the two is the probability that they are in sync. The U-Net's training
uses the frozen network as a loss (spec 3.4 step 7), and the SyncNet training script trains it
(spec 3.2).

The module layout reproduces the official state-dict keys exactly, so ``stable_syncnet.pt`` loads
strictly (266 entries for ``syncnet_16_pixel_attn.yaml``)::

    {audio,visual}_encoder.conv_in
    {audio,visual}_encoder.down_blocks.{i}   resnet and attention blocks, in creation order
    {audio,visual}_encoder.norm_out

Configuration: the ``model:`` section of an official SyncNet YAML, i.e.
``{"audio_encoder": {...}, "visual_encoder": {...}}`` where each tower has ``in_channels``,
``block_out_channels``, ``downsample_factors`` (int or ``[H, W]`` pairs), ``attn_blocks`` (0/1 per
resnet) and ``dropout``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from latentsync.errors import InvalidInputError

__all__ = [
    "StableSyncNet",
    "DownEncoder2D",
    "SyncNetResnetBlock",
    "SyncNetAttentionBlock",
    "syncnet_similarity",
    "sync_loss",
]

#: Groups of every GroupNorm in the SyncNet (hard-coded in the official towers).
NORM_GROUPS = 32
#: Heads of every SyncNet attention block.
ATTENTION_HEADS = 8


def _as_factor(factor: int | Sequence[int]) -> int | tuple[int, int]:
    """Normalise a downsample factor from YAML (int or ``[H, W]`` list) to int or ``(H, W)``."""
    if isinstance(factor, (list, tuple)):
        if len(factor) != 2:
            raise InvalidInputError(
                f"SyncNet downsample factor {factor!r}: expected an int or an [H, W] pair"
            )
        return (int(factor[0]), int(factor[1]))
    return int(factor)


def _downsample_padding(factor: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """Zero padding (left, right, top, bottom) applied before a strided downsampling conv (spec 2.6).

    An integer factor and most pairs pad one column right and one row bottom; a factor that keeps
    the height ((1, s)) also pads one row on top, one that keeps the width ((s, 1)) also pads one
    column on the left, so the 3x3 window stays centred along the kept axis.
    """
    if isinstance(factor, tuple):
        if factor[0] == 1:
            return (0, 1, 1, 1)
        if factor[1] == 1:
            return (1, 1, 0, 1)
    return (0, 1, 0, 1)


class SyncNetResnetBlock(nn.Module):
    """Pre-norm residual block with an optional strided downsampling conv (spec 2.6).

    ``GN -> SiLU -> conv3x3 -> GN -> SiLU -> dropout -> conv3x3`` plus the (1x1-projected when the
    width changes) input; then, when ``downsample_factor != 1``, zero padding and a 3x3 conv with
    stride ``downsample_factor`` and no padding.

    Args:
        in_channels, out_channels: widths (multiples of 32).
        downsample_factor: int or ``(H, W)`` stride; 1 keeps the size.
        dropout: dropout probability between the convolutions.

    Shapes: ``[B, in_channels, H, W] -> [B, out_channels, H', W']``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        downsample_factor: int | Sequence[int] = 2,
        dropout: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        factor = _as_factor(downsample_factor)
        # Registration order fixes the state-dict order: norm1, conv1, norm2, conv2, [conv_shortcut],
        # [downsample_conv].
        self.norm1 = nn.GroupNorm(NORM_GROUPS, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )
        if factor == 1 or factor == (1, 1):
            self.downsample_conv = None
            self.pad = (0, 0, 0, 0)
        else:
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=factor)
            self.pad = _downsample_padding(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        h = h + skip
        if self.downsample_conv is not None:
            h = self.downsample_conv(F.pad(h, self.pad))
        return h


class _SelfAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections (keys ``to_q``... ``to_out.0``)."""

    def __init__(self, dim: int, heads: int = ATTENTION_HEADS, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise InvalidInputError(f"SyncNet attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(d)
        out = out.transpose(1, 2).reshape(b, n, c)
        for layer in self.to_out:
            out = layer(out)
        return out


class _GEGLU(nn.Module):
    """``Linear(dim, 2*inner)`` split into value and gate; returns ``value * gelu(gate)``."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class _FeedForward(nn.Module):
    """GEGLU feed-forward, 4x inner width (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([_GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class SyncNetAttentionBlock(nn.Module):
    """Spatial self-attention block of the SyncNet towers (spec 2.6).

    ``GN -> 1x1 conv_in -> tokens (h*w) -> x + Attn(LN(x)) -> x + FF(LN(x)) -> 1x1 conv_out``, then
    the block input is added. 8 heads, q/k/v/out with bias, GEGLU feed-forward (4x).

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        # Registration order fixes the state-dict order: norm1, norm2, norm3, ff, conv_in, conv_out, attn.
        self.norm1 = nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6)
        self.norm2 = nn.LayerNorm(channels)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = _FeedForward(channels, dropout=dropout)
        self.conv_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.conv_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.attn = _SelfAttention(channels, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.conv_in(self.norm1(x)).flatten(2).transpose(1, 2)  # [B, h*w, C]
        tokens = tokens + self.attn(self.norm2(tokens))
        tokens = tokens + self.ff(self.norm3(tokens))
        y = tokens.transpose(1, 2).reshape(b, c, h, w)
        return self.conv_out(y) + x


class DownEncoder2D(nn.Module):
    """One SyncNet tower: conv_in -> resnet (+ attention) blocks -> GN -> ReLU (spec 2.6).

    Args:
        in_channels: input channels (1 for mel, 48 for 16 RGB frames).
        block_out_channels: width of each resnet block (multiples of 32).
        downsample_factors: per resnet block, int or ``[H, W]`` stride.
        attn_blocks: per resnet block, 1 to append an attention block after it.
        dropout: dropout probability inside the blocks.

    Returns ``[B, C_last, H', W']`` non-negative features (ReLU); for the official input sizes the
    spatial size is 1x1.
    """

    def __init__(
        self,
        in_channels: int,
        block_out_channels: Sequence[int],
        downsample_factors: Sequence[int | Sequence[int]],
        attn_blocks: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(block_out_channels)
        attn_blocks = list(attn_blocks) if attn_blocks is not None else [0] * n
        if len(downsample_factors) != n or len(attn_blocks) != n:
            raise InvalidInputError(
                "SyncNet tower config: block_out_channels, downsample_factors and attn_blocks must have "
                f"the same length, got {n}, {len(downsample_factors)}, {len(attn_blocks)}"
            )
        for c in block_out_channels:
            if c % NORM_GROUPS:
                raise InvalidInputError(
                    f"SyncNet tower config: every block width must be a multiple of {NORM_GROUPS}, got {c}"
                )
        self.gradient_checkpointing = False
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        width = block_out_channels[0]
        for out_ch, factor, use_attn in zip(block_out_channels, downsample_factors, attn_blocks):
            self.down_blocks.append(SyncNetResnetBlock(width, out_ch, factor, dropout=dropout))
            width = out_ch
            if int(use_attn) == 1:
                self.down_blocks.append(SyncNetAttentionBlock(width, dropout=dropout))
        self.norm_out = nn.GroupNorm(NORM_GROUPS, width, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return F.relu(self.norm_out(x))


_TOWER_KEYS = ("in_channels", "block_out_channels", "downsample_factors")


def _tower(cfg: dict[str, Any], name: str) -> DownEncoder2D:
    if name not in cfg:
        raise InvalidInputError(
            f"SyncNet config: missing section {name!r}; expected the `model:` section of a SyncNet YAML "
            f"with 'audio_encoder' and 'visual_encoder', found keys {sorted(cfg)}"
        )
    tower = cfg[name]
    missing = [k for k in _TOWER_KEYS if k not in tower]
    if missing:
        raise InvalidInputError(f"SyncNet config {name}: missing keys {missing}")
    return DownEncoder2D(
        in_channels=int(tower["in_channels"]),
        block_out_channels=[int(c) for c in tower["block_out_channels"]],
        downsample_factors=list(tower["downsample_factors"]),
        attn_blocks=list(tower.get("attn_blocks") or [0] * len(tower["block_out_channels"])),
        dropout=float(tower.get("dropout", 0.0)),
    )


class StableSyncNet(nn.Module):
    """Audio-visual sync expert (spec 2.6).

    Args:
        cfg: the ``model:`` section of an official SyncNet YAML (e.g.
            ``latentsync/configs/syncnet/syncnet_16_pixel_attn.yaml``); a full YAML dict with a
            ``model`` key is accepted too.

    Raises:
        InvalidInputError: malformed config.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        if "model" in cfg and "audio_encoder" not in cfg:
            cfg = cfg["model"]
        self.config = {k: cfg[k] for k in ("audio_encoder", "visual_encoder") if k in cfg}
        # Creation order audio, then visual, as in the official key list.
        self.audio_encoder = _tower(cfg, "audio_encoder")
        self.visual_encoder = _tower(cfg, "visual_encoder")
        self.eval()

    def enable_gradient_checkpointing(self) -> None:
        """Recompute every block in the backward pass (used when the SyncNet is a frozen loss)."""
        self.audio_encoder.gradient_checkpointing = True
        self.visual_encoder.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self.audio_encoder.gradient_checkpointing = False
        self.visual_encoder.gradient_checkpointing = False

    def forward_features(
        self, image_sequences: torch.Tensor, audio_sequences: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised tower outputs ``([B, Cv, h, w], [B, Ca, h', w'])`` (non-negative)."""
        return self.visual_encoder(image_sequences), self.audio_encoder(audio_sequences)

    def forward(
        self, image_sequences: torch.Tensor, audio_sequences: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a clip and its audio.

        Args:
            image_sequences: float ``[B, 3*F, H, W]``, F frames packed frame-major
                (channel ``3*f + c``), RGB in [-1, 1]; official: ``[B, 48, 128, 256]`` = lower half of
                16 aligned 256x256 faces.
            audio_sequences: float ``[B, 1, 80, T]`` normalised mel (range [-4, 4]); official T = 52.

        Returns:
            ``(vision_embeds, audio_embeds)``: float ``[B, D]`` non-negative unit vectors
            (D = 2048 for the released model).
        """
        vision, audio = self.forward_features(image_sequences, audio_sequences)
        vision = F.normalize(vision.reshape(vision.shape[0], -1), p=2, dim=1)
        audio = F.normalize(audio.reshape(audio.shape[0], -1), p=2, dim=1)
        return vision, audio


def syncnet_similarity(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of paired embeddings, float ``[B]`` in [0, 1] for SyncNet outputs.

    Args:
        vision_embeds, audio_embeds: ``[B, D]`` (unit vectors from :class:`StableSyncNet`; they are
            normalised again here, so raw features work too).
    """
    return F.cosine_similarity(vision_embeds, audio_embeds, dim=1)


def sync_loss(
    vision_embeds: torch.Tensor, audio_embeds: torch.Tensor, target: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Binary cross-entropy of the cosine similarity against sync labels (spec 2.6, 3.4).

    ``BCE(cos(v, a), y)`` with PyTorch's clamp of the log at -100; computed in float32. ``y = 1`` for
    in-sync pairs (the U-Net's sync loss is then ``-log cos``), 0 for off-sync negatives.

    Args:
        vision_embeds, audio_embeds: ``[B, D]``.
        target: scalar or ``[B]`` labels in {0, 1}.

    Returns: scalar mean loss.
    """
    cos = syncnet_similarity(vision_embeds.float(), audio_embeds.float()).clamp(0.0, 1.0)
    if not torch.is_tensor(target):
        target = torch.full_like(cos, float(target))
    target = target.to(cos)
    # Written out instead of F.binary_cross_entropy, which refuses to run inside CUDA autocast.
    log_p = torch.log(cos).clamp(min=-100.0)
    log_not_p = torch.log1p(-cos).clamp(min=-100.0)
    return -(target * log_p + (1.0 - target) * log_not_p).mean()


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (for logs and tests)."""
    return sum(math.prod(p.shape) for p in model.parameters())
