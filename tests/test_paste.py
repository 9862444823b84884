"""Paste-back (spec 1.12), FaceAligner input handling, face-less frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import invert_affine_transform, warp_affine
from kornia.morphology import erosion

from conftest import media_file, require_landmarks
from latentsync.errors import InvalidInputError, NoFaceError
from latentsync.face.aligner import FaceAligner
from latentsync.face.alignment import crop_bbox_in_frame, crop_size, face_template, similarity_transform
from latentsync.face.landmarks import has_legacy_face_mesh
from latentsync.face.paste import blur_sigma, generated_region, paste_back, paste_faces
from latentsync.face.warp import frame_windows, warp_to_crops
from latentsync.pipeline.stages import require_face
from latentsync.types import FaceCrops


@pytest.fixture(scope="module")
def demo_frames() -> np.ndarray:
    """Frames 0-1 of demo1 plus a blank grey frame (no face) in between: [3, 1920, 1080, 3]."""
    import av

    frames = []
    with av.open(str(media_file("demo1_video.mp4"))) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 2:
                break
    blank = np.full_like(frames[0], 90)
    return np.stack([frames[0], blank, frames[1]])


@pytest.fixture(scope="module")
def aligned(demo_frames: np.ndarray):
    require_landmarks()
    aligner = FaceAligner(256)
    crops = aligner.align(demo_frames, start_index=7)
    yield aligner, crops
    aligner.close()


class FixedLandmarker:
    """Returns one mesh built from three anchor points for every frame (index >= 0)."""

    def __init__(self, mesh: np.ndarray | None) -> None:
        self.mesh = mesh

    def detect(self, frame: np.ndarray, frame_index: int) -> np.ndarray | None:
        return self.mesh

    def detect_faces(self, frame: np.ndarray, frame_index: int) -> list[np.ndarray]:
        mesh = self.detect(frame, frame_index)
        return [] if mesh is None else [mesh]

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_align_shapes_dtypes_and_no_face_frame(aligned, demo_frames: np.ndarray) -> None:
    _, crops = aligned
    assert isinstance(crops, FaceCrops) and len(crops) == 3
    assert crops.faces.dtype == torch.uint8 and crops.faces.shape == (3, 256, 256, 3)
    assert crops.affine_matrices.dtype == torch.float32 and crops.affine_matrices.shape == (3, 2, 3)
    assert crops.crop_size == (210, 280) and crops.frame_size == (1920, 1080) and crops.resolution == 256
    assert crops.mask.shape == (256, 256) and crops.mask.dtype == torch.float32
    assert crops.start_index == 7 and crops.no_face_indices == [8]  # absolute index of the blank frame
    assert bool((crops.faces[1] == 127).all()) and bool((crops.affine_matrices[1] == 0).all())
    assert float(crops.faces[0].float().std()) > 20  # a real face, not a placeholder


def test_paste_back_of_unchanged_crops_reproduces_frames(aligned, demo_frames: np.ndarray) -> None:
    aligner, crops = aligned
    out = aligner.paste_back(demo_frames, crops.faces, crops)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == demo_frames.shape
    np.testing.assert_array_equal(out[1], demo_frames[1])  # face-less frame: untouched
    boxes = crop_bbox_in_frame(crops.affine_matrices.double().numpy()[[0, 2]], crops.crop_size)
    for k, i in enumerate((0, 2)):
        x0, y0, x1, y1 = boxes[k]
        changed = np.argwhere((out[i] != demo_frames[i]).any(axis=2))
        assert changed.size > 0
        # Only pixels inside the crop's footprint change; everything else is bit-exact.
        assert changed[:, 1].min() >= x0 - 1 and changed[:, 1].max() <= x1 + 1
        assert changed[:, 0].min() >= y0 - 1 and changed[:, 0].max() <= y1 + 1
        region = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
        diff = np.abs(out[i][region].astype(int) - demo_frames[i][region].astype(int))
        # Round trip crop -> 256 -> crop -> frame only blurs slightly.
        assert diff.mean() < 2.0, diff.mean()


def test_paste_back_types_and_float_faces(aligned, demo_frames: np.ndarray) -> None:
    _, crops = aligned
    as_uint8 = paste_back(torch.from_numpy(demo_frames), crops.faces, crops)
    assert isinstance(as_uint8, torch.Tensor) and as_uint8.dtype == torch.uint8
    as_float = paste_back(demo_frames, crops.faces.float() / 255, crops)
    assert np.abs(as_float.astype(int) - as_uint8.numpy().astype(int)).max() <= 1
    grey = paste_back(demo_frames, torch.zeros_like(crops.faces), crops)
    assert not np.array_equal(grey[0], demo_frames[0])  # a different face does get pasted


def test_windowed_paste_equals_full_frame_reference() -> None:
    """Our window-restricted paste vs a straightforward full-frame kornia/OpenCV implementation,
    with the crop partly outside the frame (bottom-right corner)."""
    import cv2

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 200, 3), dtype=np.uint8)
    anchors = np.array([[150.0, 190.0], [190.0, 196.0], [172.0, 220.0]])
    matrix = similarity_transform(anchors, face_template(256))[0].astype(np.float32)[None]
    face = torch.rand(1, 3, 280, 210) * 2 - 1
    ours = paste_faces(frame[None], face, matrix, crop_size(256))[0]

    m = torch.from_numpy(matrix)
    inv = invert_affine_transform(m)
    h, w = frame.shape[:2]
    fill = torch.full((3,), 127.0)
    inv_face = warp_affine(face, inv, (h, w), mode="bilinear", padding_mode="fill", fill_value=fill)
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    inv_mask = warp_affine(torch.ones(1, 1, 280, 210), inv, (h, w), padding_mode="zeros")
    eroded = erosion(inv_mask, torch.ones(2, 2))
    w_edge = int(float(eroded.sum()) ** 0.5) // 20
    center = cv2.erode(eroded[0, 0].numpy(), np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    k = 2 * w_edge + 1
    soft = gaussian_blur2d(torch.from_numpy(center)[None, None], (k, k), (blur_sigma(k), blur_sigma(k)))
    img = torch.from_numpy(frame).permute(2, 0, 1).float()
    theirs = (soft[0] * (eroded[0] * inv_face[0]) + (1 - soft[0]) * img).to(torch.uint8).permute(1, 2, 0).numpy()
    assert w_edge >= 1
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


def test_frame_windows_cover_bbox_inside_frame() -> None:
    boxes = np.array([[-50.0, 10.0, 40.0, 90.0], [150.0, 170.0, 260.0, 330.0], [20.5, 30.2, 60.7, 80.1]])
    origins, (h, w) = frame_windows(boxes, (300, 200), margin=3)
    for (x, y), b in zip(origins, boxes):
        assert 0 <= x and x + w <= 200 and 0 <= y and y + h <= 300
        assert x <= max(0, np.floor(b[0]) - 3) and x + w >= min(200, np.ceil(b[2]) + 3)
        assert y <= max(0, np.floor(b[1]) - 3) and y + h >= min(300, np.ceil(b[3]) + 3)


def test_crop_outside_frame_is_grey_fill() -> None:
    frame = np.zeros((100, 80, 3), np.uint8)
    matrix = np.array([[[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]]], np.float32)  # frame far from the crop
    crop = warp_to_crops(frame[None], matrix, (210, 280))
    assert bool((crop == 127).all())


def test_all_face_less_video_and_require_face() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    aligner = FaceAligner(512, landmarker=FixedLandmarker(None))
    crops = aligner.align(noise, start_index=3)
    assert crops.no_face_indices == [3, 4] and crops.faces.shape == (2, 512, 512, 3)
    assert bool((crops.faces == 127).all())
    out = aligner.paste_back(noise, crops.faces, crops)
    np.testing.assert_array_equal(out, noise)
    with pytest.raises(NoFaceError, match="no face"):
        require_face(crops.no_face_indices, len(crops), "video")


@pytest.mark.parametrize(
    "frames, name",
    [
        (np.zeros((2, 64, 48, 3), np.float32), "frames"),
        (np.zeros((64, 48, 3), np.uint8), "frames"),
        (np.zeros((2, 64, 48, 4), np.uint8), "frames"),
        (torch.zeros((2, 64, 48, 3), dtype=torch.int16), "frames"),
        ([[0]], "frames"),
    ],
)
def test_align_rejects_bad_frames(frames, name: str) -> None:
    aligner = FaceAligner(256, landmarker=FixedLandmarker(None))
    with pytest.raises(InvalidInputError, match=name):
        aligner.align(frames)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(InvalidInputError, match="resolution"):
        FaceAligner(300)
    with pytest.raises(InvalidInputError, match="resolution"):
        FaceAligner("256")
    with pytest.raises(InvalidInputError, match="landmarker"):
        FaceAligner(256, landmarker=object())
    with pytest.raises(InvalidInputError, match="fps"):
        FaceAligner(256, fps=0)
    with pytest.raises(InvalidInputError, match="start_index"):
        FaceAligner(256, landmarker=FixedLandmarker(None)).align(np.zeros((1, 8, 8, 3), np.uint8), start_index=-1)


def test_paste_back_rejects_mismatched_inputs() -> None:
    frames = np.zeros((2, 64, 48, 3), np.uint8)
    crops = FaceAligner(256, landmarker=FixedLandmarker(None)).align(frames)
    faces = crops.faces
    with pytest.raises(InvalidInputError, match="crops"):
        paste_back(frames, faces, object())
    with pytest.raises(InvalidInputError, match="frames"):
        paste_back(frames[:1], faces, crops)
    with pytest.raises(InvalidInputError, match="frames"):
        paste_back(np.zeros((2, 32, 48, 3), np.uint8), faces, crops)
    with pytest.raises(InvalidInputError, match="frames"):
        paste_back(frames.astype(np.float32), faces, crops)
    with pytest.raises(InvalidInputError, match="faces"):
        paste_back(frames, faces[:, :128], crops)
    with pytest.raises(InvalidInputError, match="faces"):
        paste_back(frames, faces.int(), crops)
    crops.no_face_indices = [5]
    with pytest.raises(InvalidInputError, match="crops"):
        paste_back(frames, faces, crops)


def test_mouth_paste_leaves_everything_outside_the_generated_region_bit_exact(aligned, demo_frames) -> None:
    _, crops = aligned
    rng = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 256, crops.faces.shape, generator=rng, dtype=torch.uint8)
    full = paste_back(demo_frames, faces, crops, mode="full")
    mouth = paste_back(demo_frames, faces, crops, mode="mouth")
    np.testing.assert_array_equal(mouth[1], demo_frames[1])  # face-less frame
    generate = crops.mask.numpy() < 0.5
    for i in (0, 2):
        weight = generated_region(crops, i)
        outside = weight == 0
        np.testing.assert_array_equal(mouth[i][outside], demo_frames[i][outside])
        inside = weight > 0.5
        assert (mouth[i][inside] != demo_frames[i][inside]).any(axis=-1).mean() > 0.9  # noise pasted there
        # the region is the mask's generated area, a part of what the official paste changes
        changed_full = (full[i] != demo_frames[i]).any(axis=-1)
        assert 0.2 < inside.sum() / changed_full.sum() < generate.mean() + 0.05
        assert (changed_full[outside]).any()  # the official paste also resamples the kept face


def test_colour_matching_removes_a_cast_at_the_seam(aligned, demo_frames) -> None:
    _, crops = aligned
    offset = torch.tensor([8.0, -5.0, 3.0])
    cast = ((crops.faces.double() - 128) * 1.1 + 128 + offset).clamp(0, 255).to(torch.uint8)
    plain = paste_back(demo_frames, cast, crops, mode="mouth")
    matched = paste_back(demo_frames, cast, crops, mode="mouth", colour_match=True)
    weight = generated_region(crops, 0)
    core = weight >= 0.999
    shift_plain = plain[0][core].astype(float).mean(0) - demo_frames[0][core].astype(float).mean(0)
    shift_matched = matched[0][core].astype(float).mean(0) - demo_frames[0][core].astype(float).mean(0)
    assert np.all(np.abs(shift_plain - offset.numpy()) < 8) and np.abs(shift_plain).max() > 6
    assert np.abs(shift_matched).max() < 1.5, shift_matched
    np.testing.assert_array_equal(matched[0][weight == 0], demo_frames[0][weight == 0])


def test_paste_options_are_checked() -> None:
    frames = np.zeros((1, 64, 48, 3), np.uint8)
    crops = FaceAligner(256, landmarker=FixedLandmarker(None)).align(frames)
    with pytest.raises(InvalidInputError, match="^paste mode: expected one of"):
        paste_back(frames, crops.faces, crops, mode="lips")
    with pytest.raises(InvalidInputError, match="^colour match: works with paste mode 'mouth' only"):
        paste_back(frames, crops.faces, crops, mode="full", colour_match=True)
