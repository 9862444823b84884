"""Down, mid and up blocks of the LatentSync U-Net (spec 2.2).

A *layer* of a down or up block is ``resnet -> [spatial transformer] -> [motion module]``. Down
blocks return every layer output (and the downsampler output) as skip connections; up blocks
concatenate one popped skip on the channel axis before each layer's resnet. The skip order and
channel counts are those of diffusers' SD-1.5 ``UNet2DConditionModel``.

The four config block types map onto two classes: ``CrossAttnDownBlock3D`` / ``DownBlock3D`` ->
:class:`DownBlock3D` with or without ``attentions``; ``CrossAttnUpBlock3D`` / ``UpBlock3D`` ->
:class:`UpBlock3D` likewise. Submodules are registered in the official order (``attentions``,
``resnets``, ``motion_modules``, ``down/upsamplers``) so ``state_dict()`` keys come out in the
official order.

All feature maps are ``[B, C, F, H, W]``; ``temb`` is ``[B, temb_channels]``;
``encoder_hidden_states`` is the audio ``[B*F, S, cross_attention_dim]`` (row ``b*F + f``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from latentsync.models.attention import Transformer3DModel
from latentsync.models.motion_module import VanillaTemporalModule
from latentsync.models.resnet import Downsample3D, ResnetBlock3D, Upsample3D


class _CheckpointedBlock(nn.Module):
    """Base for blocks whose submodule calls can be wrapped in activation checkpointing."""

    gradient_checkpointing: bool = False

    def _run(self, module: nn.Module, *args: Any) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _layer(
        self, index: int, h: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None
    ) -> torch.Tensor:
        """One ``resnet -> [attention] -> [motion module]`` layer."""
        h = self._run(self.resnets[index], h, temb)
        if self.attentions is not None:
            h = self._run(self.attentions[index], h, encoder_hidden_states)
        if self.motion_modules is not None:
            h = self._run(self.motion_modules[index], h)
        return h


def _make_layers(
    block: _CheckpointedBlock,
    in_channels: list[int],
    out_channels: int,
    temb_channels: int,
    cross_attention: bool,
    num_heads: int,
    cross_attention_dim: int,
    norm_groups: int,
    norm_eps: float,
    motion_module_kwargs: dict | None,
) -> None:
    """Register ``attentions``, ``resnets`` and ``motion_modules`` on ``block`` in the official order.

    Modules are created layer by layer (resnet, attention, motion module), which is the order in
    which the official constructor draws their random initial weights, so that a model built after
    ``torch.manual_seed(s)`` equals the official one built after the same seed.
    """
    resnets, attentions, motion_modules = [], [], []
    for c_in in in_channels:
        resnets.append(ResnetBlock3D(c_in, out_channels, temb_channels, groups=norm_groups, eps=norm_eps))
        if cross_attention:
            attentions.append(Transformer3DModel(out_channels, num_heads, cross_attention_dim, norm_groups))
        if motion_module_kwargs is not None:
            motion_modules.append(VanillaTemporalModule(out_channels, **motion_module_kwargs))
    block.attentions = nn.ModuleList(attentions) if cross_attention else None
    block.resnets = nn.ModuleList(resnets)
    block.motion_modules = nn.ModuleList(motion_modules) if motion_module_kwargs is not None else None


class DownBlock3D(_CheckpointedBlock):
    """Encoder block: ``num_layers`` layers, then an optional stride-2 downsampler.

    Args:
        in_channels / out_channels: channels entering / leaving the block.
        temb_channels: time-embedding width.
        num_layers: layers (``layers_per_block``, 2).
        add_downsample: append ``downsamplers.0`` (all but the last block).
        cross_attention: add spatial transformers (``CrossAttnDownBlock3D``).
        num_heads: spatial-transformer heads (config ``attention_head_dim``).
        cross_attention_dim: audio width (384).
        norm_groups / norm_eps: resnet GroupNorm settings.
        downsample_padding: padding of the downsampling conv (1).
        motion_module_kwargs: kwargs of :class:`VanillaTemporalModule`, or None for no motion modules.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        add_downsample: bool,
        cross_attention: bool,
        num_heads: int,
        cross_attention_dim: int,
        norm_groups: int,
        norm_eps: float,
        downsample_padding: int = 1,
        motion_module_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        layer_inputs = [in_channels] + [out_channels] * (num_layers - 1)
        _make_layers(
            self, layer_inputs, out_channels, temb_channels, cross_attention, num_heads, cross_attention_dim,
            norm_groups, norm_eps, motion_module_kwargs,
        )  # fmt: skip
        self.downsamplers = (
            nn.ModuleList([Downsample3D(out_channels, padding=downsample_padding)]) if add_downsample else None
        )

    def forward(
        self, hidden_states: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Returns ``(output, skips)``: the block output and every layer/downsampler output in order."""
        skips: tuple[torch.Tensor, ...] = ()
        for i in range(len(self.resnets)):
            hidden_states = self._layer(i, hidden_states, temb, encoder_hidden_states)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class UNetMidBlock3DCrossAttn(_CheckpointedBlock):
    """``resnet -> spatial transformer -> resnet`` at the lowest resolution; never a motion module.

    Args:
        channels: feature channels (``block_out_channels[-1]``).
        temb_channels, num_heads, cross_attention_dim, norm_groups, norm_eps: as in :class:`DownBlock3D`.
        output_scale_factor: resnet output scale (``mid_block_scale_factor``, 1).
    """

    motion_modules = None

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        num_heads: int,
        cross_attention_dim: int,
        norm_groups: int,
        norm_eps: float,
        output_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        # created resnet, attention, resnet (the official random-init order), registered attentions first
        def resnet() -> ResnetBlock3D:
            return ResnetBlock3D(channels, channels, temb_channels, norm_groups, norm_eps, 0.0, output_scale_factor)

        first = resnet()
        attention = Transformer3DModel(channels, num_heads, cross_attention_dim, norm_groups)
        second = resnet()
        self.attentions = nn.ModuleList([attention])
        self.resnets = nn.ModuleList([first, second])

    def forward(
        self, hidden_states: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, C, F, H, W]`` -> ``[B, C, F, H, W]``."""
        hidden_states = self._run(self.resnets[0], hidden_states, temb)
        hidden_states = self._run(self.attentions[0], hidden_states, encoder_hidden_states)
        return self._run(self.resnets[1], hidden_states, temb)


class UpBlock3D(_CheckpointedBlock):
    """Decoder block: ``num_layers`` layers, each fed ``cat([h, skip], dim=1)``, then an optional upsampler.

    Args:
        in_channels: channels of the skips of the matching down level (consumed by all but the last layer).
        prev_output_channels: channels of the incoming hidden state.
        out_channels: channels leaving the block.
        skip_channels_last: channels of the skip consumed by the last layer.
        add_upsample: append ``upsamplers.0`` (all but the last block).
        others: as in :class:`DownBlock3D` (``num_layers`` is ``layers_per_block + 1``).
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        add_upsample: bool,
        cross_attention: bool,
        num_heads: int,
        cross_attention_dim: int,
        norm_groups: int,
        norm_eps: float,
        motion_module_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        layer_inputs = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            h_channels = prev_output_channels if i == 0 else out_channels
            layer_inputs.append(h_channels + skip_channels)
        _make_layers(
            self, layer_inputs, out_channels, temb_channels, cross_attention, num_heads, cross_attention_dim,
            norm_groups, norm_eps, motion_module_kwargs,
        )  # fmt: skip
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        start_layer: int = 0,
        stop_layer: int | None = None,
    ) -> torch.Tensor:
        """Run layers ``start_layer .. stop_layer-1`` (default: all), then the upsampler if the last ran.

        Args:
            hidden_states: ``[B, C_h, F, H, W]``, the input of layer ``start_layer``.
            skips: one skip ``[B, C_s, F, H, W]`` per layer run; each layer pops the last one.
            start_layer / stop_layer: run a sub-range of layers (used by DeepCache, spec 1.11).

        Returns:
            ``[B, out_channels, F, H', W']`` (``H' = 2H`` when the upsampler ran).
        """
        stop_layer = len(self.resnets) if stop_layer is None else stop_layer
        if len(skips) != stop_layer - start_layer:
            raise ValueError(f"UpBlock3D: {stop_layer - start_layer} skips needed, {len(skips)} given")
        for i in range(start_layer, stop_layer):
            hidden_states = torch.cat([hidden_states, skips[-1]], dim=1)
            skips = skips[:-1]
            hidden_states = self._layer(i, hidden_states, temb, encoder_hidden_states)
        if self.upsamplers is not None and stop_layer == len(self.resnets):
            hidden_states = self.upsamplers[0](hidden_states)
        return hidden_states
