"""Losses of SyncNet and U-Net training (spec 2.6, 3.2, 3.4).

* :func:`syncnet_bce_loss` / :func:`syncnet_accuracy` — BCE of the cosine similarity; accuracy at 0.5.
* :func:`mixed_noise` — the per-frame + shared noise of ``use_mixed_noise`` (spec 3.4 step 2).
* :class:`PerceptualLoss` — LPIPS-style distance over a VGG-16-like feature net. The ``lpips``
  package needs torchvision (forbidden here), so the network is ours: the feature stack has the
  layer indices of torchvision's ``vgg16().features`` (keys ``net.features.<i>.weight``) and the
  linear heads the keys of LPIPS v0.1 (``lin<k>.model.1.weight``), so converted official weights
  load into it; any channel widths can be used (tiny random nets in tests).
* :class:`TrepaLoss` — temporal representation alignment with a VideoMAE encoder
  (``transformers.VideoMAEModel``; spec 3.4 step 7): both videos resized to the encoder size,
  [-1, 1] -> [0, 1], feature = LayerNorm(mean of tokens), L2-normalised, MSE.
* :func:`lipsync_sync_loss` — the frozen-SyncNet loss on decoded frames.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latentsync.errors import MissingWeightsError

__all__ = [
    "syncnet_bce_loss",
    "syncnet_accuracy",
    "embedding_spread",
    "mixed_noise",
    "PerceptualLoss",
    "TrepaLoss",
    "lipsync_sync_loss",
    "lower_half",
]


def syncnet_bce_loss(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor,
                     y: torch.Tensor | float) -> torch.Tensor:
    """``BCE(cos(v, a), y)`` in float32, log clamped at -100 (spec 2.6). Scalar."""
    from latentsync.models.syncnet import sync_loss

    return sync_loss(vision_embeds, audio_embeds, y)


@torch.no_grad()
def syncnet_accuracy(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor,
                     y: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Fraction of pairs with ``(cos > threshold) == (y == 1)`` (spec 5.2). Scalar float."""
    cos = F.cosine_similarity(vision_embeds.float(), audio_embeds.float(), dim=1)
    return ((cos > threshold).float() == (y.float() > 0.5).float()).float().mean()


def embedding_spread(embeds: torch.Tensor) -> torch.Tensor:
    """How much a batch of embeddings ``[N, D]`` differs between samples: ``1 - |mean e|^2 / mean |e|^2``
    in [0, 1] (float32 scalar); 0 = every sample has the same embedding (collapse), 1 = the batch
    mean is zero. A randomly initialised StableSyncNet gives about 0.3-0.4 per tower (ReLU outputs
    share a positive mean); a collapsed one (loss stuck at ln 2, cos = 0.5 for every pair) < 0.01.
    """
    e = embeds.float()
    return 1.0 - e.mean(0).pow(2).sum() / e.pow(2).sum(1).mean().clamp_min(1e-12)


def mixed_noise(shape: Sequence[int], alpha: float, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", use_mixed_noise: bool = True) -> torch.Tensor:
    """Training noise ``[B, C, F, h, w]`` (spec 3.4 step 2).

    Mixed: ``sqrt(1/(1+a^2)) * n_f + sqrt(a^2/(1+a^2)) * s`` with ``n_f`` i.i.d. per frame and ``s``
    one draw ``[B, C, 1, h, w]`` shared by all frames (unit variance for any a). Otherwise one draw
    repeated over the frames.
    """
    b, c, f, h, w = shape
    shared = torch.randn((b, c, 1, h, w), generator=generator, device=device)
    if not use_mixed_noise:
        return shared.expand(b, c, f, h, w).contiguous()
    per_frame = torch.randn((b, c, f, h, w), generator=generator, device=device)
    a2 = float(alpha) ** 2
    return (1.0 / (1.0 + a2)) ** 0.5 * per_frame + (a2 / (1.0 + a2)) ** 0.5 * shared


def lower_half(x: torch.Tensor) -> torch.Tensor:
    """Rows ``H/2 .. H`` of ``[..., H, W]`` images (the mouth region; spec 3.4 step 7)."""
    return x[..., x.shape[-2] // 2:, :]


# --------------------------------------------------------------------------------------------------
# LPIPS-style perceptual loss

#: torchvision vgg16().features layout: conv channel widths and the ReLU indices LPIPS taps.
VGG16_CHANNELS = (64, 128, 256, 512, 512)
_VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
#: LPIPS input scaling constants (from the LPIPS paper's code): (x - shift) / scale, x in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class _VGGFeatures(nn.Module):
    """VGG-16 style conv stack; ``features.<i>`` indices as in torchvision (conv, relu, pool)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []
        c_in = 3
        for stage, (c, n) in enumerate(zip(channels, _VGG16_CONVS_PER_STAGE)):
            if stage > 0:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = c
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
                if len(outs) == len(self.taps):
                    break
        return outs


class _Lin(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(c, 1, 1, bias=False))


class PerceptualLoss(nn.Module):
    """LPIPS-style distance (frozen): per tapped layer, channel-unit-normalise both feature maps,
    squared difference, weight channels with a non-negative 1x1 head, average spatially; sum layers.

    Args:
        channels: widths of the five VGG stages (``VGG16_CHANNELS`` for real LPIPS weights).
        weights_path: a ``.pt``/``.pth``/``.safetensors`` file with keys ``net.features.<i>.*`` and
            ``lin<k>.model.1.weight`` (None -> random init, for tests only).

    Inputs: two image batches ``[N, 3, H, W]`` in [-1, 1]. Output: scalar mean distance.

    Raises:
        MissingWeightsError: ``weights_path`` given but absent.
    """

    def __init__(self, channels: Sequence[int] = VGG16_CHANNELS, weights_path: str | os.PathLike | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        if seed is not None:
            g_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        self.net = _VGGFeatures(channels)
        for k, c in enumerate(channels):
            setattr(self, f"lin{k}", _Lin(c))
        if seed is not None:
            with torch.no_grad():  # random heads must be non-negative like trained ones
                for k in range(len(channels)):
                    getattr(self, f"lin{k}").model[1].weight.abs_()
            torch.random.set_rng_state(g_state)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        if weights_path is not None:
            p = Path(weights_path)
            if not p.is_file():
                raise MissingWeightsError(
                    f"LPIPS weights {str(p)!r} not found: put a file with VGG-16 features "
                    "(net.features.<i>.*) and LPIPS heads (lin<k>.model.1.weight) there, or set the "
                    "perceptual loss weight to 0")
            from latentsync.checkpoints import load_state_dict_file

            self.load_state_dict(load_state_dict_file(p), strict=True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":  # always frozen / eval
        return super().train(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = self.net((pred - self.shift) / self.scale)
        ft = self.net((target - self.shift) / self.scale)
        total = 0.0
        for k, (a, b) in enumerate(zip(fp, ft)):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = getattr(self, f"lin{k}").model((a - b) ** 2)
            total = total + d.mean(dim=(1, 2, 3))
        return total.mean()


# --------------------------------------------------------------------------------------------------
# TREPA


class TrepaLoss(nn.Module):
    """TREPA: distance between VideoMAE features of predicted and target clips (spec 3.4 step 7).

    Args:
        model: a ``transformers.VideoMAEModel`` (frozen here) and ``fc_norm`` LayerNorm of its width
            (VideoMAE-v2 mean pooling + norm), or use :meth:`from_pretrained`.
        image_size: frame size the encoder expects (224 for ViT-g/14 ... any for tiny configs).

    Inputs: ``pred``, ``target`` float ``[B, 3, F, H, W]`` in [-1, 1]. Output: scalar
    ``MSE(normalize(f(pred)), normalize(f(target)))`` averaged over B x D.
    """

    def __init__(self, model: nn.Module, fc_norm: nn.Module | None, image_size: int,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.model = model
        self.fc_norm = fc_norm if fc_norm is not None else nn.Identity()
        self.image_size = int(image_size)
        if gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "TrepaLoss":
        return super().train(False)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, gradient_checkpointing: bool = False) -> "TrepaLoss":
        """Load a local transformers VideoMAE folder (``config.json`` + weights). A
        ``VideoMAEForVideoClassification`` folder gives the ``fc_norm`` too.

        Raises:
            MissingWeightsError: folder absent.
        """
        p = Path(path)
        if not (p / "config.json").is_file():
            raise MissingWeightsError(
                f"TREPA VideoMAE weights {str(p)!r} not found: expected a transformers VideoMAE folder "
                "(config.json + model.safetensors) converted from vit_g_hybrid_pt_1200e_ssv2_ft.pth, "
                "or set run.trepa_loss_weight=0")
        from transformers import VideoMAEForVideoClassification, VideoMAEModel

        try:
            clf = VideoMAEForVideoClassification.from_pretrained(p, local_files_only=True)
            model, fc_norm = clf.videomae, clf.fc_norm
        except Exception:
            model, fc_norm = VideoMAEModel.from_pretrained(p, local_files_only=True), None
        return cls(model, fc_norm, model.config.image_size, gradient_checkpointing)

    @classmethod
    def tiny_random(cls, seed: int = 0, image_size: int = 32, num_frames: int = 16) -> "TrepaLoss":
        """A 2-layer, 32-wide random VideoMAE (tests / tiny configs; no files)."""
        from transformers import VideoMAEConfig, VideoMAEModel

        cfg = VideoMAEConfig(image_size=image_size, patch_size=8, num_frames=num_frames, tubelet_size=2,
                             hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, use_mean_pooling=True, qkv_bias=True)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = VideoMAEModel(cfg)
        fc_norm = nn.LayerNorm(cfg.hidden_size)
        torch.random.set_rng_state(state)
        return cls(model, fc_norm, image_size)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, F, H, W]`` in [-1, 1] -> L2-normalised ``[B, D]``."""
        b, c, f, h, w = video.shape
        x = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        if (h, w) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        x = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
        x = x.reshape(b, f, c, self.image_size, self.image_size)  # VideoMAE takes [B, F, C, H, W]
        dtype = next(self.model.parameters()).dtype
        tokens = self.model(pixel_values=x.to(dtype)).last_hidden_state
        feat = self.fc_norm(tokens.mean(1))
        return F.normalize(feat.float(), dim=-1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ft = self.features(target)
        return F.mse_loss(self.features(pred), ft)


# --------------------------------------------------------------------------------------------------
# SyncNet loss on generated frames


def lipsync_sync_loss(syncnet: nn.Module, frames: torch.Tensor, mel: torch.Tensor,
                      syncnet_resolution: int = 256) -> torch.Tensor:
    """Frozen-SyncNet loss ``-log cos`` of decoded frames vs their mel (spec 3.4 step 7).

    Args:
        frames: float ``[B, F, 3, R, R]`` in [-1, 1] (bicubic-resized to ``syncnet_resolution`` if R
            differs).
        mel: float ``[B, 1, 80, 52]``.
    """
    b, f, c, h, w = frames.shape
    if h != syncnet_resolution:
        x = F.interpolate(frames.reshape(b * f, c, h, w), size=(syncnet_resolution, syncnet_resolution),
                          mode="bicubic", align_corners=False)
        frames = x.reshape(b, f, c, syncnet_resolution, syncnet_resolution)
    x = lower_half(frames.reshape(b, f * c, syncnet_resolution, syncnet_resolution))
    dtype = next(syncnet.parameters()).dtype
    v, a = syncnet(x.to(dtype), mel.to(dtype))
    return syncnet_bce_loss(v, a, 1.0)
