"""DeepCache for the LatentSync U-Net: reuse deep features across denoising steps (spec 1.11).

Equivalent to DeepCache 0.1.1 ``DeepCacheSDHelper`` with ``cache_interval=3, cache_branch_id=0``,
as the official pipeline uses it: every ``cache_interval``-th step (step index 0, 3, 6, ... of a
chunk) runs the whole U-Net and stores its deep features; the other steps recompute only the
shallow branch -- time embedding, ``conv_in``, the last layer of the last up block (resnet 2 on the
cached features concatenated with the fresh ``conv_in`` output, attention 2 with the current audio,
motion module 2) and the output head -- and take everything deeper from the cache.

The cached tensor is the input of that last layer (the output of layer 1 of ``up_blocks[-1]``, after
its motion module). The official helper instead caches the outputs of resnets/attentions 0-1 of that
block and re-runs motion modules 0-1 on them every step; since those inputs are cached, the re-run
reproduces the cached value, so skipping it changes nothing but the cost (spec 7, item 10).

Usage (one chunk of a DDIM loop)::

    cached_unet = DeepCacheUNet(unet, cache_interval=3)
    cached_unet.reset()                          # start of every chunk
    for i, t in enumerate(scheduler.timesteps):
        eps = cached_unet(latent_input, t, audio_embeds, step_index=i)
"""

from __future__ import annotations

import torch

from latentsync.errors import InvalidInputError
from latentsync.models.unet import UNet3DConditionModel


class DeepCacheUNet:
    """Wraps a :class:`~latentsync.models.unet.UNet3DConditionModel` with a deep-feature cache.

    Args:
        unet: the U-Net (any dtype/device; not modified).
        cache_interval: run the full U-Net on step indices divisible by it (3 officially; 1 = no
            caching).
        cache_branch_id: the DeepCache branch whose shallow part is recomputed; only 0 (the
            outermost, as in the official pipeline) is implemented.

    Raises:
        InvalidInputError: ``cache_interval < 1`` or ``cache_branch_id != 0``.
    """

    def __init__(self, unet: UNet3DConditionModel, cache_interval: int = 3, cache_branch_id: int = 0) -> None:
        if int(cache_interval) != cache_interval or cache_interval < 1:
            raise InvalidInputError(f"DeepCache cache_interval: expected an integer >= 1, found {cache_interval!r}")
        if cache_branch_id != 0:
            raise InvalidInputError(
                f"DeepCache cache_branch_id: only 0 (the official setting) is implemented, found {cache_branch_id!r}"
            )
        self.unet = unet
        self.cache_interval = int(cache_interval)
        self.cache_branch_id = cache_branch_id
        self._features: torch.Tensor | None = None
        self.num_full_steps = 0
        self.num_cached_steps = 0

    def reset(self) -> None:
        """Drop the cached features (call at the start of every chunk / new sample)."""
        self._features = None
        self.num_full_steps = 0
        self.num_cached_steps = 0

    @property
    def has_cache(self) -> bool:
        """Whether features from a full step are stored."""
        return self._features is not None

    def is_full_step(self, step_index: int) -> bool:
        """Whether ``step_index`` runs the whole U-Net (``step_index % cache_interval == 0``)."""
        return step_index % self.cache_interval == 0

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor | None,
        step_index: int,
    ) -> torch.Tensor:
        """Predict the noise for one denoising step.

        Args:
            sample: ``[B, 13, F, h, w]`` U-Net input (spec 1.9), as for the U-Net itself.
            timestep: the step's timestep (0-dim / ``[B]`` tensor or number).
            encoder_hidden_states: audio ``[B*F, 50, 384]`` or ``[B, F, 50, 384]``.
            step_index: position of ``timestep`` in the scheduler's timesteps (0-based, per chunk).

        Returns:
            Predicted noise ``[B, 4, F, h, w]`` in the model dtype.

        A non-full step without usable cached features (nothing stored yet, or the cache was made
        for a different batch/frame/spatial shape) runs fully and stores its features.
        """
        features = self._features
        if self.is_full_step(step_index) or features is None or not self._fits(features, sample):
            out = self.unet(sample, timestep, encoder_hidden_states, return_deep_features=True)
            self._features = out.deep_features.detach()
            self.num_full_steps += 1
            return out.sample
        self.num_cached_steps += 1
        return self.unet(sample, timestep, encoder_hidden_states, cached_deep_features=features).sample

    @staticmethod
    def _fits(features: torch.Tensor, sample: torch.Tensor) -> bool:
        return (
            features.shape[0] == sample.shape[0]
            and features.shape[2:] == sample.shape[2:]
            and features.device == sample.device
        )
