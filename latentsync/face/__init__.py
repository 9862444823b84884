"""Face stage: mediapipe landmarks, similarity alignment to the official template, the fixed
inpainting mask, and the feathered paste-back (spec 1.7, 1.8, 1.12).

Modules: ``landmarks`` (mediapipe mesh -> anchors), ``alignment`` (pure geometry + smoothing),
``warp`` (batched kornia warps), ``masks`` (mask.png family), ``paste`` (inverse warp + blend),
``tracks`` (one identity per face across frames), ``speaker`` (the face choice: largest, index,
point, auto = active speaker), ``aligner`` (:class:`FaceAligner`, stateful over the chunks of one
video).
"""

from latentsync.face.aligner import FaceAligner
from latentsync.face.alignment import OneEuroSmoother, crop_size, face_template, similarity_transform
from latentsync.face.landmarks import create_landmarker
from latentsync.face.masks import load_mask
from latentsync.face.paste import paste_back

__all__ = [
    "FaceAligner",
    "OneEuroSmoother",
    "create_landmarker",
    "crop_size",
    "face_template",
    "load_mask",
    "paste_back",
    "similarity_transform",
]
