"""FaceCropAlign (frames -> aligned face crops) and PasteBackFaces (faces -> full frames), spec 1.7, 1.12.

Both take the frames as an IMAGE batch or as a VIDEO (core LoadVideo): a VIDEO is decoded chunk by
chunk from its file, never held whole; long videos' crops are kept in ComfyUI's temp folder.
"""

from __future__ import annotations

from comfy_api.latest import io

from .comfy_convert import audio_to_mono_16k, collect_image, faces_preview
from .comfy_models import model_folders
from .comfy_progress import ComfyProgress
from .comfy_vae import generated_faces
from .comfy_video import frame_source, is_video, scratch_dir, temp_folder, write_video
from .sockets import CATEGORY, FaceCrops

FRAMES_TOOLTIP = ("Video frames: an IMAGE batch, or a VIDEO (e.g. core Load Video; read in chunks from its "
                  "file, never decoded whole; a trim is honoured, a crop is refused).")


class FaceCropAlign(io.ComfyNode):
    """Finds the face in every frame and warps it to the LatentSync template (spec 1.7)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncFaceCropAlign",
            display_name="LatentSync Face Crop & Align",
            category=CATEGORY,
            description=(
                "Detects the face in each frame (mediapipe), aligns it to the LatentSync template and "
                "crops it to resolution x resolution. Frames without a face are kept and passed through "
                "unchanged by 'LatentSync Paste Back Faces'; a video with no face at all is an error."
            ),
            inputs=[
                io.MultiType.Input("images", types=[io.Image, io.Video], tooltip=FRAMES_TOOLTIP),
                io.Combo.Input(
                    "resolution", options=["512", "256"], default="512",
                    tooltip="Face crop size: 512 for LatentSync 1.6, 256 for 1.5 (must match the U-Net).",
                ),
                io.String.Input(
                    "face", default="largest",
                    tooltip="Which face to lip-sync when there are several (it is followed through the clip, the "
                            "others are left untouched): largest; auto = the active speaker, whose mouth moves "
                            "with the speech (needs 'audio'); index:N (0 = leftmost); point:X,Y (X, Y in 0..1: "
                            "the face nearest to that point).",
                ),
                io.Audio.Input("audio", optional=True,
                               tooltip="The speech (same AUDIO as for the sampler); needed only for face = auto."),
            ],
            outputs=[
                FaceCrops.Output(display_name="face_crops", tooltip="Aligned faces + affine matrices + mask, for the sampler and paste-back."),
                io.Image.Output(display_name="faces", tooltip="The aligned face crops [N, R, R, 3] (preview; the first 64 for a long video)."),
                io.Mask.Output(display_name="mask", tooltip="Region the model regenerates (1 = generated, 0 = kept), [1, R, R]."),
                io.String.Output(display_name="no_face_frames", tooltip="Comma-separated indices of frames without a face (empty if none)."),
            ],
        )

    @classmethod
    def execute(cls, images, resolution: str, face: str = "largest", audio=None) -> io.NodeOutput:
        from latentsync.face.aligner import FaceAligner
        from latentsync.pipeline.stages import align_source
        from latentsync.video.segments import collect_crops

        speech = audio_to_mono_16k(audio) if audio is not None else None
        with frame_source(images) as source, FaceAligner(
            int(resolution), fps=float(source.fps or 25), search_dirs=model_folders(), face=face
        ) as aligner:
            crops = align_source(source, aligner, callback=ComfyProgress(), speech=speech,
                                 collect=lambda parts: collect_crops(parts, temp_folder()))
        no_face = ",".join(str(i) for i in crops.no_face_indices)
        return io.NodeOutput(crops, faces_preview(crops), (1.0 - crops.mask.float())[None], no_face)


class PasteBackFaces(io.ComfyNode):
    """Warps generated faces back into the original frames with a feathered mask (spec 1.12)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncPasteBackFaces",
            display_name="LatentSync Paste Back Faces",
            category=CATEGORY,
            description=(
                "Pastes the generated faces into the original frames. The result has one frame per "
                "generated face (the audio's length) at the original size; when the audio is longer "
                "than the video the frames are taken forward/backward as in the official pipeline. "
                "Frames without a face are returned unchanged. Given a VIDEO, the result is encoded "
                "chunk by chunk into a VIDEO (the input's fps, the audio muxed) for Save Video."
            ),
            inputs=[
                io.MultiType.Input("images", types=[io.Image, io.Video],
                                   tooltip="The original frames: the same IMAGE or VIDEO that went into Face Crop & Align."),
                io.MultiType.Input("faces", types=[io.Image, io.Latent],
                                   tooltip="Generated faces: an IMAGE [F, R, R, 3] from 'LatentSync VAE Decode Frames', "
                                           "or the sampler's LATENT (decoded here chunk by chunk with 'vae'; best for long videos)."),
                FaceCrops.Input("face_crops", tooltip="Output of 'LatentSync Face Crop & Align' for these frames."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Speech muxed into the VIDEO output (cut to its length); VIDEO input only."),
                io.Vae.Input("vae", optional=True, tooltip="The sampler's VAE; needed when 'faces' is a LATENT."),
                io.Combo.Input(
                    "paste_mode", options=["mouth", "full"], default="mouth",
                    tooltip="mouth: paste back only the region the model generated (feathered); every other pixel "
                            "stays bit-exact. full: the official restore of the whole aligned face (the upper face "
                            "is resampled twice and loses a little detail).",
                ),
                io.Boolean.Input(
                    "colour_match", default=False,
                    tooltip="Match the generated region's colour (per-channel mean/std) to the frame along the seam "
                            "before blending; removes a colour cast of the generated mouth. Mouth mode only.",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Lip-synced frames, original size (IMAGE input only; empty for a VIDEO)."),
                io.Video.Output(display_name="video", tooltip="Lip-synced video with the audio (VIDEO input only; empty for an IMAGE)."),
            ],
        )

    @classmethod
    def execute(cls, images, faces, face_crops, audio=None, vae=None, paste_mode: str = "mouth",
                colour_match: bool = False) -> io.NodeOutput:
        from latentsync.pipeline.stages import paste_function, paste_source

        paste = paste_function(paste_mode, colour_match)
        with frame_source(images) as source, scratch_dir() as spill:
            faces_of, n = generated_faces(faces, vae, face_crops)
            chunks = paste_source(source, face_crops, faces_of, n, spill, paste=paste, callback=ComfyProgress())
            if is_video(images):
                return io.NodeOutput(None, write_video(chunks, n, source, audio))
            return io.NodeOutput(collect_image(chunks, n, source.frame_size), None)
