"""The LatentSync 1.5/1.6 audio-conditioned 3D U-Net (spec 2.1-2.5, Appendix A.1).

An SD-1.5-shaped U-Net whose convolutions run per frame, whose spatial transformers cross-attend to
Whisper audio tokens (``attn2``, width 384), and which has a temporal layer (motion module) after
every down- and up-block layer. It predicts the noise epsilon of the 4 latent channels from the
13-channel input of spec 1.9 (noisy latents 4, mask 1, masked-face latents 4, reference latents 4).

``state_dict()`` keys, shapes and order equal the official checkpoint's (1246 entries for the
stage-2 configs including 40 ``pos_encoder.pe`` buffers; 686 without motion modules; 1022 with
``motion_module_decoder_only``). Modules are created in the official order too, so a model built
after ``torch.manual_seed(s)`` draws the same random initial weights as the official code.

Example::

    unet = UNet3DConditionModel.from_config(yaml_cfg["model"])
    eps = unet(sample, timestep, encoder_hidden_states=audio_embeds).sample
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentsync.errors import InvalidInputError
from latentsync.models.motion_module import DEFAULT_MOTION_MODULE_KWARGS
from latentsync.models.resnet import FrameConv2d
from latentsync.models.unet_blocks import DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D

#: The LatentSync 1.5/1.6 ``model:`` section (configs/unet/stage2*.yaml, spec 2.1). Keys missing
#: from a config given to :meth:`UNet3DConditionModel.from_config` take these values.
DEFAULT_UNET_CONFIG: dict = {
    "act_fn": "silu",
    "add_audio_layer": True,
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 13,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "resnet_time_scale_shift": "default",
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": False,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": DEFAULT_MOTION_MODULE_KWARGS,
}

# Official constructor arguments that this implementation supports only at one value; a config may
# carry them (older YAMLs and diffusers-style dumps do) as long as they have that value.
_FIXED_OPTIONS: dict = {
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "upcast_attention": False,
    "use_inflated_groupnorm": False,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "custom_audio_layer": False,
    "audio_condition_method": "cross_attn",
}
# Accepted and ignored (they select behaviour that does not change the network).
_IGNORED_KEYS = {"_class_name", "_diffusers_version", "sample_size"}

_DOWN_TYPES = {"CrossAttnDownBlock3D": True, "DownBlock3D": False}
_UP_TYPES = {"CrossAttnUpBlock3D": True, "UpBlock3D": False}


@dataclass
class UNet3DOutput:
    """Output of :meth:`UNet3DConditionModel.forward`.

    Attributes:
        sample: predicted noise ``[B, out_channels, F, H, W]`` (epsilon), model dtype.
        deep_features: only when ``return_deep_features=True``: the DeepCache features, i.e. the input
            of the last layer of the last up block ``[B, block_out_channels[0], F, H, W]`` (spec 1.11).
    """

    sample: torch.Tensor
    deep_features: torch.Tensor | None = None


def timestep_embedding(
    timesteps: torch.Tensor,
    dim: int,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """Sinusoidal timestep embedding (DDPM / diffusers ``Timesteps``).

    Args:
        timesteps: ``[B]`` integer or float timesteps (0..999).
        dim: embedding width (even; ``block_out_channels[0]``).
        flip_sin_to_cos: put the cosines first (True for LatentSync).
        freq_shift: ``downscale_freq_shift`` (0 for LatentSync).

    Returns:
        float32 ``[B, dim]``.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = timesteps[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """``Linear -> SiLU -> Linear`` on the sinusoidal embedding (keys ``linear_1``, ``linear_2``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim] -> [B, out_dim]``."""
        return self.linear_2(F.silu(self.linear_1(x)))


def resolve_unet_config(cfg: dict | None) -> dict:
    """Merge ``cfg`` (an official YAML ``model:`` section) over :data:`DEFAULT_UNET_CONFIG` and check it.

    Returns:
        A new dict with every key of :data:`DEFAULT_UNET_CONFIG` (``motion_module_kwargs`` merged too).

    Raises:
        InvalidInputError: unknown keys, unsupported option values, or inconsistent block lists.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_UNET_CONFIG) - set(_FIXED_OPTIONS) - _IGNORED_KEYS)
    if unknown:
        raise InvalidInputError(f"U-Net config: unknown keys {unknown}; expected keys of the official `model:` section")
    for key, value in _FIXED_OPTIONS.items():
        if key in cfg and cfg.pop(key) != value:
            raise InvalidInputError(
                f"U-Net config: {key} must be {value!r} for LatentSync 1.5/1.6 (unsupported variant)"
            )
    resolved = copy.deepcopy(DEFAULT_UNET_CONFIG)
    resolved.update(copy.deepcopy(cfg))
    resolved["motion_module_kwargs"] = {**DEFAULT_MOTION_MODULE_KWARGS, **(cfg.get("motion_module_kwargs") or {})}

    def fail(key: str, expected: str) -> None:
        raise InvalidInputError(f"U-Net config: {key} must be {expected}, found {resolved[key]!r}")

    n = len(resolved["block_out_channels"])
    if [t for t in resolved["down_block_types"] if t not in _DOWN_TYPES] or len(resolved["down_block_types"]) != n:
        fail("down_block_types", f"{n} of {sorted(_DOWN_TYPES)} (one per block_out_channels entry)")
    if [t for t in resolved["up_block_types"] if t not in _UP_TYPES] or len(resolved["up_block_types"]) != n:
        fail("up_block_types", f"{n} of {sorted(_UP_TYPES)} (one per block_out_channels entry)")
    if resolved["mid_block_type"] != "UNetMidBlock3DCrossAttn":
        fail("mid_block_type", "'UNetMidBlock3DCrossAttn'")
    if resolved["act_fn"] != "silu":
        fail("act_fn", "'silu'")
    if resolved["resnet_time_scale_shift"] != "default":
        fail("resnet_time_scale_shift", "'default'")
    if resolved["motion_module_type"] != "Vanilla":
        fail("motion_module_type", "'Vanilla'")
    if not resolved["add_audio_layer"]:
        fail("add_audio_layer", "true (audio cross-attention)")
    if resolved["motion_module_mid_block"] and resolved["use_motion_module"]:
        fail("motion_module_mid_block", "false (LatentSync has no temporal layer in the mid block)")
    if not isinstance(resolved["attention_head_dim"], int):
        fail("attention_head_dim", "one int (the number of heads)")
    return resolved


class UNet3DConditionModel(nn.Module):
    """Audio-conditioned 3D U-Net of LatentSync 1.5/1.6 (spec 2.1-2.4).

    Build with :meth:`from_config`. Submodules (in ``state_dict()`` order): ``conv_in``,
    ``time_embedding``, ``down_blocks``, ``up_blocks``, ``mid_block``, ``conv_norm_out``,
    ``conv_out``. ``conv_in``, ``conv_out`` and every motion module's ``proj_out`` are
    zero-initialised (spec 2.5); everything else uses PyTorch's default init.

    Attributes:
        config: the resolved constructor config (every key of :data:`DEFAULT_UNET_CONFIG`).
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        cfg = resolve_unet_config(config)
        self.config = cfg
        channels = list(cfg["block_out_channels"])
        groups, eps = cfg["norm_num_groups"], cfg["norm_eps"]
        heads, cross_dim = cfg["attention_head_dim"], cfg["cross_attention_dim"]
        layers = cfg["layers_per_block"]
        temb_channels = channels[0] * 4
        mm_resolutions = set(cfg["motion_module_resolutions"])
        mm_kwargs = cfg["motion_module_kwargs"] if cfg["use_motion_module"] else None
        self.max_frames = (
            mm_kwargs["temporal_position_encoding_max_len"]
            if mm_kwargs is not None and mm_kwargs["temporal_position_encoding"]
            else None
        )
        n = len(channels)

        self.conv_in = FrameConv2d(cfg["in_channels"], channels[0], kernel_size=3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)

        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()  # registered before mid_block: official key order
        for i, block_type in enumerate(cfg["down_block_types"]):
            use_mm = mm_kwargs is not None and 2**i in mm_resolutions and not cfg["motion_module_decoder_only"]
            self.down_blocks.append(
                DownBlock3D(
                    in_channels=channels[max(i - 1, 0)],
                    out_channels=channels[i],
                    temb_channels=temb_channels,
                    num_layers=layers,
                    add_downsample=i < n - 1,
                    cross_attention=_DOWN_TYPES[block_type],
                    num_heads=heads,
                    cross_attention_dim=cross_dim,
                    norm_groups=groups,
                    norm_eps=eps,
                    downsample_padding=cfg["downsample_padding"],
                    motion_module_kwargs=mm_kwargs if use_mm else None,
                )
            )
        # the mid block is created before the up blocks (official random-init order) but registered after
        # them (official key order)
        mid_block = UNetMidBlock3DCrossAttn(
            channels[-1], temb_channels, heads, cross_dim, groups, eps, cfg["mid_block_scale_factor"]
        )
        reversed_channels = channels[::-1]
        for i, block_type in enumerate(cfg["up_block_types"]):
            use_mm = mm_kwargs is not None and 2 ** (n - 1 - i) in mm_resolutions
            self.up_blocks.append(
                UpBlock3D(
                    in_channels=reversed_channels[min(i + 1, n - 1)],
                    prev_output_channels=reversed_channels[max(i - 1, 0)],
                    out_channels=reversed_channels[i],
                    temb_channels=temb_channels,
                    num_layers=layers + 1,
                    add_upsample=i < n - 1,
                    cross_attention=_UP_TYPES[block_type],
                    num_heads=heads,
                    cross_attention_dim=cross_dim,
                    norm_groups=groups,
                    norm_eps=eps,
                    motion_module_kwargs=mm_kwargs if use_mm else None,
                )
            )
        self.mid_block = mid_block
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=eps)
        self.conv_out = FrameConv2d(channels[0], cfg["out_channels"], kernel_size=3, padding=1)

        for conv in (self.conv_in, self.conv_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    # ------------------------------------------------------------------ construction / training
    @classmethod
    def from_config(cls, cfg: dict | None) -> UNet3DConditionModel:
        """Build the model from an official YAML ``model:`` section (same key names, spec 2.1).

        Missing keys take the LatentSync 1.6 values (:data:`DEFAULT_UNET_CONFIG`). Build under
        ``with torch.device("meta"):`` to get the structure without allocating weights.

        Raises:
            InvalidInputError: unknown keys or an unsupported variant (see :func:`resolve_unet_config`).
        """
        return cls(cfg or {})

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the parameters (float32 / float16 / bfloat16)."""
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.conv_in.weight.device

    def _blocks(self) -> list[nn.Module]:
        return [*self.down_blocks, self.mid_block, *self.up_blocks]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute every resnet / transformer / motion module in backward (training, train mode only)."""
        for block in self._blocks():
            block.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        """Turn activation checkpointing off again."""
        for block in self._blocks():
            block.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether :meth:`enable_gradient_checkpointing` is in effect."""
        return bool(self.mid_block.gradient_checkpointing)

    # ------------------------------------------------------------------ inputs
    def _check_inputs(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, encoder_hidden_states: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate shapes; return ``timesteps [B]`` and the audio as ``[B*F, S, D]``."""
        if not isinstance(sample, torch.Tensor) or sample.dim() != 5:
            found = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise InvalidInputError(f"U-Net sample: expected a 5-D tensor [B, C, F, H, W], found {found}")
        b, c, f, h, w = sample.shape
        if c != self.config["in_channels"]:
            raise InvalidInputError(
                f"U-Net sample: expected {self.config['in_channels']} channels (latents 4 + mask 1 + masked 4 + "
                f"reference 4, spec 1.9), found {c} (shape {tuple(sample.shape)})"
            )
        if b < 1 or f < 1:
            raise InvalidInputError(
                f"U-Net sample: batch and frame count must be >= 1, found shape {tuple(sample.shape)}"
            )
        if self.max_frames is not None and f > self.max_frames:
            raise InvalidInputError(
                f"U-Net sample: {f} frames exceed temporal_position_encoding_max_len={self.max_frames}; "
                f"process the video in chunks of at most {self.max_frames} frames (16 is the official chunk)"
            )
        factor = 2 ** (len(self.down_blocks) - 1)
        if h % factor or w % factor:
            raise InvalidInputError(
                f"U-Net sample: latent height and width must be divisible by {factor}, found {h}x{w} "
                f"(pixel size must be a multiple of {8 * factor})"
            )

        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.numel() not in (1, b) or timesteps.dim() > 1:
            raise InvalidInputError(
                f"U-Net timestep: expected a scalar or {b} values (one per batch item), "
                f"found shape {tuple(timesteps.shape)}"
            )
        timesteps = timesteps.reshape(-1)
        timesteps = timesteps.expand(b)

        if encoder_hidden_states is None:
            return timesteps, None
        ehs = encoder_hidden_states
        dim = self.config["cross_attention_dim"]
        if ehs.dim() == 4 and ehs.shape[:2] == (b, f):
            ehs = ehs.reshape(b * f, *ehs.shape[2:])
        if ehs.dim() != 3 or ehs.shape[0] != b * f or ehs.shape[2] != dim:
            raise InvalidInputError(
                f"U-Net encoder_hidden_states: expected audio embeddings [B*F, S, {dim}] = [{b * f}, S, {dim}] or "
                f"[B, F, S, {dim}] = [{b}, {f}, S, {dim}], found {tuple(encoder_hidden_states.shape)}"
            )
        return timesteps, ehs.to(self.dtype)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        *,
        cached_deep_features: torch.Tensor | None = None,
        return_deep_features: bool = False,
    ) -> UNet3DOutput:
        """Predict the noise of the latent channels.

        Args:
            sample: ``[B, in_channels, F, H, W]`` (13 channels, spec 1.9), cast to the model dtype; F <= 24;
                H, W divisible by 8 (latent size, 64 for 512 px).
            timestep: 0-dim or ``[B]`` int/float tensor, or a Python number (0..999); broadcast to B.
            encoder_hidden_states: audio embeddings ``[B*F, 50, 384]`` (row ``b*F + f``) or
                ``[B, F, 50, 384]``; None skips the audio cross-attention.
            cached_deep_features: DeepCache reuse step (spec 1.11): the ``deep_features`` of an earlier
                full step, ``[B, block_out_channels[0], F, H, W]``. Only the time embedding,
                ``conv_in``, the last layer of the last up block and the output head are computed.
            return_deep_features: on a full pass, also return the DeepCache features.

        Returns:
            :class:`UNet3DOutput` with ``sample`` ``[B, out_channels, F, H, W]``.

        Raises:
            InvalidInputError: wrong rank, channel count, frame count, spatial size, timestep or
                audio shape (the message gives expected and found values).
        """
        timesteps, ehs = self._check_inputs(sample, timestep, encoder_hidden_states)
        sample = sample.to(self.dtype)
        if self.config["center_input_sample"]:
            sample = 2 * sample - 1.0

        # 1. time embedding (sinusoids in float32, MLP in the model dtype)
        t_emb = timestep_embedding(timesteps, self.config["block_out_channels"][0], self.config["flip_sin_to_cos"],
                                   self.config["freq_shift"])  # fmt: skip
        temb = self.time_embedding(t_emb.to(self.dtype))

        # 2. input convolution; its output is also the skip of the very last decoder layer
        h = self.conv_in(sample)
        first_skip = h
        last_block = self.up_blocks[-1]
        last_layer = len(last_block.resnets) - 1

        if cached_deep_features is not None:
            # 3'. DeepCache reuse: everything deeper than the last decoder layer comes from the cache
            expected = (sample.shape[0], self.config["block_out_channels"][0], *sample.shape[2:])
            if tuple(cached_deep_features.shape) != expected:
                raise InvalidInputError(
                    f"U-Net cached_deep_features: expected shape {expected}, found {tuple(cached_deep_features.shape)}"
                )
            deep = cached_deep_features.to(h.dtype)
        else:
            # 3. encoder: every layer (and downsampler) output is a skip connection
            skips: tuple[torch.Tensor, ...] = (h,)
            for block in self.down_blocks:
                h, block_skips = block(h, temb, ehs)
                skips += block_skips
            # 4. bottleneck
            h = self.mid_block(h, temb, ehs)
            # 5. decoder up to (not including) the last layer of the last block
            for block in self.up_blocks[:-1]:
                n = len(block.resnets)
                h = block(h, skips[-n:], temb, ehs)
                skips = skips[:-n]
            deep = last_block(h, skips[1:], temb, ehs, stop_layer=last_layer)
        # 6. last decoder layer: deep features concatenated with the conv_in output
        h = last_block(deep, (first_skip,), temb, ehs, start_layer=last_layer)
        # 7. output head (GroupNorm statistics over all frames, like the resnets)
        out = self.conv_out(F.silu(self.conv_norm_out(h)))
        return UNet3DOutput(sample=out, deep_features=deep if return_deep_features else None)
