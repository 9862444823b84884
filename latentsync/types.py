"""Data passed between the pipeline stages (backend side; ComfyUI nodes convert at the boundary).

Shapes follow the field's conventions: frames are ``[N, H, W, 3]`` uint8 RGB, latents ``[F, 4, h, w]``
with frames as batch, audio embeddings ``[F, 50, 384]`` (one Whisper window per output frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video stream.

    Attributes:
        fps: frames per second (Hz), e.g. 25.0 or 29.97.
        num_frames: number of decodable frames.
        width, height: frame size in pixels.
        duration_s: ``num_frames / fps`` in seconds.
    """

    fps: float
    num_frames: int
    width: int
    height: int
    duration_s: float


@dataclass
class AudioEmbeds:
    """Per-video-frame Whisper audio windows (spec 1.4 step 6).

    Attributes:
        embeds: float32 ``[F, 50, 384]``; row ``i`` conditions output frame ``i``. The classifier-free
            guidance unconditional branch is ``zeros_like(embeds)``.
        fps: the frame rate (Hz) the windows were cut for.
    """

    embeds: torch.Tensor
    fps: float

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


@dataclass
class FaceCrops:
    """Aligned face crops of a video and what is needed to paste them back (spec 1.7, 1.8, 1.12).

    Attributes:
        faces: uint8 ``[F, R, R, 3]`` RGB 0..255 aligned faces, R = ``resolution``. Frames without a
            face hold a grey (127) placeholder and are listed in ``no_face_indices``.
        affine_matrices: float32 ``[F, 2, 3]``, each maps frame pixels -> crop pixels (before the
            resize of the crop to R x R).
        crop_size: ``(W, H)`` of the crop before the resize, e.g. (210, 280) for R=256.
        mask: float32 ``[R, R]`` inpainting mask, 1 = keep, 0 = region to generate.
        frame_size: ``(H, W)`` of the source frames.
        resolution: R, 256 or 512.
        no_face_indices: sorted frame indices where no face was found; those frames pass through
            paste-back unchanged.
        start_index: absolute index of ``faces[0]`` in the video; ``no_face_indices`` are absolute,
            so ``faces[i - start_index]`` is the entry of frame ``i`` (0 for a whole video).
    """

    faces: torch.Tensor
    affine_matrices: torch.Tensor
    crop_size: tuple[int, int]
    mask: torch.Tensor
    frame_size: tuple[int, int]
    resolution: int
    no_face_indices: list[int] = field(default_factory=list)
    start_index: int = 0

    def __len__(self) -> int:
        return int(self.faces.shape[0])

    @classmethod
    def concat(cls, parts: "list[FaceCrops]") -> "FaceCrops":
        """Join the crops of consecutive frame runs into one sequence.

        Args:
            parts: non-empty list of ``FaceCrops`` of consecutive frames (same resolution, mask and
                frame size; ``no_face_indices`` absolute, as :class:`FaceCrops` defines them).

        Returns:
            ``parts[0]`` itself when there is one part, else a new ``FaceCrops`` with faces
            ``[sum F_i, R, R, 3]``, matrices ``[sum F_i, 2, 3]``, the sorted union of
            ``no_face_indices`` and the first part's ``start_index``/mask/crop and frame sizes.

        Raises:
            ValueError: ``parts`` is empty.
        """
        if not parts:
            raise ValueError("FaceCrops.concat: expected at least one FaceCrops, got an empty list")
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return cls(
            faces=torch.cat([torch.as_tensor(p.faces) for p in parts]),
            affine_matrices=torch.cat([torch.as_tensor(p.affine_matrices) for p in parts]),
            crop_size=first.crop_size,
            mask=first.mask,
            frame_size=first.frame_size,
            resolution=first.resolution,
            no_face_indices=sorted(i for p in parts for i in p.no_face_indices),
            start_index=first.start_index,
        )

    def select(self, indices) -> "FaceCrops":
        """The rows ``indices`` (e.g. a ping-pong loop, spec 1.6) as a new sequence starting at 0.

        Row ``r`` of ``self`` is frame ``start_index + r``; in the result, ``no_face_indices`` are the
        positions ``j`` whose source row ``indices[j]`` has no face.

        Args:
            indices: int ``[K]`` (numpy, list or tensor) of rows of ``self``, each in ``0..len-1``.

        Returns:
            ``FaceCrops`` with ``K`` rows, ``start_index`` 0 (faces and matrices indexed copies).

        Raises:
            IndexError: an index outside ``0..len(self)-1``.
        """
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        missing = set(int(i) - int(self.start_index) for i in self.no_face_indices)
        return FaceCrops(
            faces=torch.as_tensor(self.faces)[idx],
            affine_matrices=torch.as_tensor(self.affine_matrices)[idx],
            crop_size=self.crop_size,
            mask=self.mask,
            frame_size=self.frame_size,
            resolution=self.resolution,
            no_face_indices=[j for j, i in enumerate(idx.tolist()) if i in missing],
            start_index=0,
        )
