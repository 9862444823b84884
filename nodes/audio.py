"""LoadWhisperAudio: AUDIO + fps -> per-frame Whisper audio embeddings (spec 1.4)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .comfy_convert import audio_to_mono_16k
from .comfy_models import load_model
from .comfy_progress import ComfyProgress
from .comfy_video import video_fps
from .sockets import CATEGORY, AudioEmbeds, WhisperModel


class LoadWhisperAudio(io.ComfyNode):
    """Encodes speech with Whisper tiny and cuts one 50x384 window per output video frame."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncLoadWhisperAudio",
            display_name="LatentSync Whisper Audio",
            category=CATEGORY,
            description=(
                "Turns the driving speech into one Whisper window per output frame. The number of "
                "windows sets the length of the result: about the audio's duration x fps (+2 frames, "
                "as in the official pipeline). A shorter video is looped forward/backward to match; a "
                "longer one is cut."
            ),
            inputs=[
                io.Audio.Input("audio", tooltip="Driving speech (any sample rate and channel count; mixed to mono 16 kHz)."),
                WhisperModel.Input("whisper", tooltip="Whisper tiny from 'Load LatentSync Whisper'."),
                io.Float.Input(
                    "fps", default=25.0, min=1.0, max=120.0, step=0.001,
                    tooltip="Frame rate of the video the faces come from (e.g. the fps output of GetVideoComponents).",
                ),
                io.Video.Input("video", optional=True,
                               tooltip="The VIDEO the faces come from (e.g. core Load Video); when connected its fps is used instead of 'fps'."),
            ],
            outputs=[
                AudioEmbeds.Output(display_name="audio_embeds", tooltip="Whisper windows [frames, 50, 384], one per output frame."),
                io.Int.Output(display_name="num_frames", tooltip="Number of output frames these embeddings drive."),
            ],
        )

    @classmethod
    def execute(cls, audio, whisper, fps: float, video=None) -> io.NodeOutput:
        from latentsync.audio.windows import compute_audio_embeds

        progress = ComfyProgress()
        progress()
        fps = video_fps(video) if video is not None else float(fps)
        embeds = compute_audio_embeds(load_model(whisper.patcher), audio_to_mono_16k(audio), fps)
        progress()
        embeds.embeds = embeds.embeds.to("cpu", torch.float32)
        return io.NodeOutput(embeds, len(embeds))
