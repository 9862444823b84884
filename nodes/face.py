"""FaceCropAlign (IMAGE -> aligned face crops) and PasteBackFaces (faces -> full frames), spec 1.7, 1.12."""

from __future__ import annotations

from comfy_api.latest import io

from . import comfy_bridge as bridge
from .sockets import CATEGORY, FaceCrops


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
                io.Image.Input("images", tooltip="Video frames (IMAGE batch)."),
                io.Combo.Input(
                    "resolution", options=["512", "256"], default="512",
                    tooltip="Face crop size: 512 for LatentSync 1.6, 256 for 1.5 (must match the U-Net).",
                ),
            ],
            outputs=[
                FaceCrops.Output(display_name="face_crops", tooltip="Aligned faces + affine matrices + mask, for the sampler and paste-back."),
                io.Image.Output(display_name="faces", tooltip="The aligned face crops [N, R, R, 3] (preview)."),
                io.Mask.Output(display_name="mask", tooltip="Region the model regenerates (1 = generated, 0 = kept), [1, R, R]."),
                io.String.Output(display_name="no_face_frames", tooltip="Comma-separated indices of frames without a face (empty if none)."),
            ],
        )

    @classmethod
    def execute(cls, images, resolution: str) -> io.NodeOutput:
        images = bridge.check_image(images)
        crops = bridge.align_faces(images, int(resolution))
        faces = bridge.uint8_to_image(crops.faces)
        mask = (1.0 - crops.mask.float())[None]
        no_face = ",".join(str(i) for i in crops.no_face_indices)
        return io.NodeOutput(crops, faces, mask, no_face)


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
                "Frames without a face are returned unchanged."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The original video frames (same IMAGE that went into Face Crop & Align)."),
                io.Image.Input("faces", tooltip="Generated faces [F, R, R, 3] from 'LatentSync VAE Decode Frames'."),
                FaceCrops.Input("face_crops", tooltip="Output of 'LatentSync Face Crop & Align' for these images."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="Lip-synced frames, original size.")],
        )

    @classmethod
    def execute(cls, images, faces, face_crops) -> io.NodeOutput:
        images = bridge.check_image(images)
        faces = bridge.check_image(faces, "faces")
        return io.NodeOutput(bridge.paste_faces(images, faces, face_crops))
