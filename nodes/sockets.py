"""Custom socket types of the pack (V3 ``io.Custom``); the strings are stable workflow identifiers."""

from comfy_api.latest import io

LatentSyncModel = io.Custom("LATENTSYNC_MODEL")
"""U-Net (``comfy_models.LatentSyncModel``: ModelPatcher + config + resolution)."""
WhisperModel = io.Custom("LATENTSYNC_WHISPER")
"""Whisper tiny (``comfy_models.WhisperModel``)."""
AudioEmbeds = io.Custom("LATENTSYNC_AUDIO_EMBEDS")
"""``latentsync.types.AudioEmbeds``: float32 ``[F, 50, 384]`` windows, one per output frame."""
FaceCrops = io.Custom("LATENTSYNC_FACE_CROPS")
"""``latentsync.types.FaceCrops``: aligned faces, affine matrices, mask, frames without a face."""

CATEGORY = "LatentSync"
