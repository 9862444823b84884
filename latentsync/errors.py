"""Errors raised by the LatentSync backend.

Every error message names the input, what was expected, what was found and, where possible, what
to do about it. Callers (CLI, ComfyUI nodes, training scripts) catch :class:`LatentSyncError` and
show ``str(err)`` as a one-line message instead of a stack trace.
"""


class LatentSyncError(Exception):
    """Base class of every error the backend raises on bad input or missing files."""


class CheckpointError(LatentSyncError):
    """A weight file cannot be read, is of the wrong kind, or does not fit the model (spec 2.5)."""


class MissingWeightsError(CheckpointError):
    """A required weight file is absent and cannot be downloaded (offline, or the download failed)."""


class NoFaceError(LatentSyncError):
    """No face was found in any frame of a video (frames without a face are otherwise passed through)."""


class AudioTooShortError(LatentSyncError):
    """The audio is empty or shorter than one video frame."""


class InvalidInputError(LatentSyncError):
    """An input file or parameter is unusable: missing path, corrupt media, unsupported value."""
