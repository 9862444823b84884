"""LatentSyncSampler: aligned faces + audio windows -> face latents (spec 1.8-1.11)."""

from __future__ import annotations

from comfy_api.latest import io

from .comfy_models import check_model_resolution, load_model
from .comfy_progress import ComfyProgress
from .comfy_vae import ComfyVAE, to_latent
from .sockets import CATEGORY, AudioEmbeds, FaceCrops, LatentSyncModel


class LatentSyncSampler(io.ComfyNode):
    """DDIM (or DPM-Solver++) sampling of the mouth region, 16 frames per chunk, zero-audio CFG, optional DeepCache."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from latentsync.config import SCHEDULERS

        return io.Schema(
            node_id="LatentSyncSampler",
            display_name="LatentSync Sampler",
            category=CATEGORY,
            description=(
                "Generates the lower face of every output frame from the aligned faces and the audio "
                "windows (DDIM, 16-frame chunks, classifier-free guidance against silent audio). Output "
                "frames = audio windows; faces are looped forward/backward when the audio is longer."
            ),
            inputs=[
                LatentSyncModel.Input("model", tooltip="U-Net from 'Load LatentSync U-Net'."),
                io.Vae.Input("vae", tooltip="sd-vae-ft-mse from a VAELoader."),
                FaceCrops.Input("face_crops", tooltip="From 'LatentSync Face Crop & Align' (resolution must match the model)."),
                AudioEmbeds.Input("audio_embeds", tooltip="From 'LatentSync Whisper Audio'."),
                io.Int.Input("seed", default=1247, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise (shared by all frames) and of the VAE posterior draws."),
                io.Int.Input("steps", default=20, min=1, max=1000,
                             tooltip="DDIM steps (num_inference_steps); the official default is 20, 20-50 recommended."),
                io.Float.Input("guidance_scale", default=1.5, min=1.0, max=10.0, step=0.05,
                               tooltip="Audio guidance (CFG against zero audio). 1.0 disables it (half the compute); 1.5 is the official setting."),
                io.Boolean.Input("deepcache", default=False,
                                 tooltip="DeepCache: reuse deep U-Net features on 2 of every 3 steps (faster, slightly different)."),
                io.Combo.Input("scheduler", options=list(SCHEDULERS), default="ddim",
                               tooltip="ddim: the official sampler (20 steps). dpmsolver++: fast mode, about the same "
                                       "quality in ~10 steps (half the compute), but not the official result."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Face latents [frames, 4, R/8, R/8] (unscaled, as ComfyUI's VAE expects).")],
        )

    @classmethod
    def execute(cls, model, vae, face_crops, audio_embeds, seed: int, steps: int,
                guidance_scale: float, deepcache: bool, scheduler: str = "ddim") -> io.NodeOutput:
        from latentsync.pipeline.sampler import make_scheduler
        from latentsync.pipeline.stages import FaceSampler, sample_timeline

        check_model_resolution(model, face_crops)
        unet = load_model(model.patcher)
        sampler = FaceSampler(
            unet, ComfyVAE(vae), resolution=model.resolution, num_frames=len(audio_embeds), num_inference_steps=steps,
            guidance_scale=guidance_scale, seed=seed, deepcache=deepcache, device=model.patcher.load_device,
            dtype=next(unet.parameters()).dtype, scheduler=make_scheduler(name=scheduler), callback=ComfyProgress(),
        )
        return io.NodeOutput(to_latent(sample_timeline(sampler, face_crops, audio_embeds.embeds)))
