"""Progress and interruption: the one callback every backend stage gets from a node."""

from __future__ import annotations

from typing import Any


class ComfyProgress:
    """Callback for the backend stages: interruption check + ComfyUI progress bar.

    The stages call it with :class:`latentsync.pipeline.stages.Progress` (``done``/``total``), or
    with nothing (an interruption check alone). Every call first runs
    ``comfy.model_management.throw_exception_if_processing_interrupted()``, so Cancel in the UI stops
    the job within one unit of work (a frame chunk, a denoising step).
    """

    def __init__(self):
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(1)

    def __call__(self, progress: Any = None) -> None:
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()
        if progress is not None and progress.total > 0:
            self.bar.update_absolute(min(progress.done, progress.total), progress.total)
