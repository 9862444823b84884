"""VAEDecodeFrames: LATENT (face latents) -> face IMAGE batch, decoded in chunks (spec 1.10)."""

from __future__ import annotations

from comfy_api.latest import io

from .comfy_progress import ComfyProgress
from .comfy_vae import decode_latent
from .sockets import CATEGORY


class VAEDecodeFrames(io.ComfyNode):
    """Decodes the sampler's face latents with ComfyUI's VAE, a few frames per call."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncVAEDecodeFrames",
            display_name="LatentSync VAE Decode Frames",
            category=CATEGORY,
            description=(
                "Decodes face latents to images in chunks of batch_size frames, with progress and "
                "Cancel between chunks (a long video has thousands of frames)."
            ),
            inputs=[
                io.Vae.Input("vae", tooltip="sd-vae-ft-mse from a VAELoader (the VAE LatentSync was trained with)."),
                io.Latent.Input("latent", tooltip="Face latents from the LatentSync Sampler."),
                io.Int.Input("batch_size", default=8, min=1, max=256,
                             tooltip="Frames per VAE decode call; lower it if the GPU runs out of memory."),
            ],
            outputs=[io.Image.Output(display_name="faces", tooltip="Decoded faces [F, R, R, 3].")],
        )

    @classmethod
    def execute(cls, vae, latent, batch_size: int) -> io.NodeOutput:
        return io.NodeOutput(decode_latent(vae, latent, batch_size, ComfyProgress()))
