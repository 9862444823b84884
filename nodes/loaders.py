"""Loaders: the LatentSync U-Net and Whisper tiny from ``models/latentsync`` (spec 1.2, 2.5, 2.8)."""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_models as models
from .sockets import CATEGORY, LatentSyncModel, WhisperModel

VERSIONS = ["auto", "1.6 (512)", "1.5 (256)"]
"""Version choice. The 1.5 and 1.6 U-Nets share one architecture (identical ``model:`` config and tensor
shapes, spec 0/2.1), so the choice only sets the face-crop resolution: 1.6 -> 512, 1.5 -> 256.
``auto``: what the file states (``latentsync.checkpoints.detect_unet_resolution``): ``1.5``/``256`` or
``1.6``/``512`` in the file or folder name, a config stored beside the checkpoint (tiny test models),
the resolution or title in a ``.safetensors`` file's metadata; else 512. The weights themselves cannot
tell 1.5 from 1.6 (same shapes)."""


class UNetLoader(io.ComfyNode):
    """Loads ``latentsync_unet.pt`` (1.5 or 1.6) and hands it to ComfyUI's model management."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncUNetLoader",
            display_name="Load LatentSync U-Net",
            category=CATEGORY,
            description=(
                "Loads a LatentSync U-Net checkpoint from models/latentsync/ (official "
                "latentsync_unet.pt of LatentSync 1.5 or 1.6, or a re-pack of it under any name: .pt, "
                ".pth, .ckpt, .bin, .safetensors, fp16/bf16). ComfyUI moves it to the GPU when the "
                "sampler runs and may offload it afterwards."
            ),
            inputs=[
                io.Combo.Input(
                    "unet_name", options=models.list_unet_files(),
                    tooltip="Checkpoint file in models/latentsync/ (or a 'latentsync' extra model path).",
                ),
                io.Combo.Input(
                    "version", options=VERSIONS, default="auto",
                    tooltip=(
                        "Model config. 1.6 works on 512x512 face crops, 1.5 on 256x256. 'auto' takes "
                        "what the file or folder name says ('1.5'/'256' or '1.6'/'512'), else the "
                        "resolution in a .safetensors file's metadata, else 1.6."
                    ),
                ),
            ],
            outputs=[LatentSyncModel.Output(
                display_name="model", tooltip="LatentSync U-Net; its resolution sets the face crop size.")],
        )

    @classmethod
    def execute(cls, unet_name: str, version: str) -> io.NodeOutput:
        from latentsync.checkpoints import load_unet

        path = models.full_model_path(unet_name)
        resolution = models.unet_resolution_for(path, version)
        unet = load_unet(path, config=None, device="cpu", dtype=models.inference_dtype(models.torch_device()),
                         resolution=resolution)
        model = models.LatentSyncModel(models.wrap_model(unet.eval()), dict(unet.config), resolution, unet_name)
        return io.NodeOutput(model)


class WhisperLoader(io.ComfyNode):
    """Loads OpenAI Whisper tiny (``models/latentsync/whisper/tiny.pt``), the audio encoder (spec 2.8)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncWhisperLoader",
            display_name="Load LatentSync Whisper",
            category=CATEGORY,
            description="Loads Whisper tiny (openai-whisper format) from models/latentsync/whisper/.",
            inputs=[
                io.Combo.Input(
                    "whisper_name", options=models.list_whisper_files(),
                    tooltip="Whisper checkpoint under models/latentsync/whisper/ (tiny.pt for LatentSync 1.5/1.6).",
                ),
            ],
            outputs=[WhisperModel.Output(
                display_name="whisper", tooltip="Whisper tiny; only its encoder is used.")],
        )

    @classmethod
    def execute(cls, whisper_name: str) -> io.NodeOutput:
        from latentsync.checkpoints import load_whisper

        model = load_whisper(models.full_model_path(whisper_name), device="cpu")
        return io.NodeOutput(models.WhisperModel(models.wrap_model(model.eval()), whisper_name))
