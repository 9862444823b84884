"""Seconds spent in each stage of a lip-sync job (for ``LipSyncResult.stage_seconds`` and bench/).

Stages, in the order a frame meets them: ``decode`` (PyAV frames), ``align`` (landmarks + warp),
``audio`` (Whisper features), ``encode_latents`` (VAE encode of masked and reference faces),
``denoise`` (the sampler loop), ``decode_latents`` (VAE decode + aligned-space composite), ``paste``
(paste-back into the frames), ``encode_video`` (H.264 encode and mux).

The figure of a stage is the wall time spent inside it, summed over chunks. When stages run in
parallel threads (the pipelined job) these sums overlap, so they add up to more than the job's wall
time. CUDA work is asynchronous: without ``synchronize`` a stage's figure holds only the time to queue
its kernels, and the GPU time shows up in whichever stage waits for the result next (usually a device ->
host copy); ``synchronize=True`` waits for the device at the end of every stage (exact figures, but
the waits also stop the overlap, so measure frames/s without it).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

STAGES = ("decode", "align", "audio", "encode_latents", "denoise", "decode_latents", "paste", "encode_video")


class StageTimer:
    """Accumulates seconds per stage; safe to use from several threads.

    Args:
        device: the inference device (only used with ``synchronize``).
        synchronize: on CUDA, ``torch.cuda.synchronize`` at the end of every timed block.

    Usage::

        timer = StageTimer()
        with timer("decode"):
            frames = next(reader)
        timer.seconds()  # {"decode": 0.41, "align": 0.0, ...}
    """

    def __init__(self, device: torch.device | str = "cpu", synchronize: bool = False):
        self._device = torch.device(device)
        self._sync = synchronize and self._device.type == "cuda"
        self._lock = threading.Lock()
        self._seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage`` (one of :data:`STAGES`; ``KeyError`` otherwise)."""
        if stage not in self._seconds:
            raise KeyError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize(self._device)
            dt = time.perf_counter() - t0
            with self._lock:
                self._seconds[stage] += dt

    def timed(self, stage: str, fn: Callable) -> Callable:
        """``fn`` wrapped so that every call is timed as ``stage``."""

        def call(*args, **kwargs):
            with self(stage):
                return fn(*args, **kwargs)

        return call

    def timed_iter(self, stage: str, iterable) -> Iterator:
        """Yield the items of ``iterable``, timing each ``next()`` as ``stage``."""
        it = iter(iterable)
        while True:
            with self(stage):
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def seconds(self) -> dict[str, float]:
        """Seconds per stage so far, every stage of :data:`STAGES` present (0.0 when unused)."""
        with self._lock:
            return dict(self._seconds)
