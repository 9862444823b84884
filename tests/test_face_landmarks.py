"""mediapipe landmarks and the anchor mapping (spec 1.7; parity README section 6).

The parity reference used mediapipe 0.10.11 FaceMesh (static mode) on frame 0 of demo1 and mapped
the mesh to InsightFace-style 106 points; ``landmarks3`` are the three anchors the official
alignment consumed. Our mediapipe (0.10.21 in CI) must land on the same integer anchors.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import media_file, parity_file
from latentsync.errors import InvalidInputError, MissingWeightsError
from latentsync.face.landmarks import (
    FACE_LANDMARKER_TASK,
    MediaPipeFaceMesh,
    MediaPipeTasksLandmarker,
    anchor_points,
    anchors_from_106,
    create_landmarker,
    has_legacy_face_mesh,
    mesh_to_106,
    resolve_face_landmarker_task,
)

needs_face_mesh = pytest.mark.skipif(not has_legacy_face_mesh(), reason="mediapipe without bundled FaceMesh")


@pytest.fixture(scope="module")
def ref() -> dict:
    return {k: v.numpy() for k, v in load_file(str(parity_file("alignment.safetensors"))).items()}


def decode(name: str, count: int) -> np.ndarray:
    import av

    frames = []
    with av.open(str(media_file(name))) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)


def test_mapping_reproduces_reference_106_and_anchors(ref: dict) -> None:
    xy = ref["mediapipe_landmarks_xy"].astype(np.float64)
    lm106 = mesh_to_106(xy)
    np.testing.assert_array_equal(lm106, ref["landmarks_106"])
    assert (lm106 == -1).all(axis=1).sum() == 106 - 14
    np.testing.assert_array_equal(anchors_from_106(lm106), ref["landmarks3"])
    np.testing.assert_array_equal(anchor_points(xy, rounded=True), ref["landmarks3"])
    # Unrounded anchors differ from the integer ones by rounding only.
    assert np.abs(anchor_points(xy, rounded=False) - ref["landmarks3"]).max() <= 1.0


def test_mesh_input_is_validated() -> None:
    with pytest.raises(InvalidInputError, match="landmarks"):
        anchor_points(np.zeros((10, 2)))
    with pytest.raises(InvalidInputError, match="landmarks_106"):
        anchors_from_106(np.zeros((68, 2)))


@needs_face_mesh
@pytest.mark.parametrize("static", [True, False])
def test_mediapipe_on_reference_frame_matches_landmarks3(ref: dict, static: bool) -> None:
    landmarker = MediaPipeFaceMesh(static_image_mode=static)
    try:
        xy = landmarker.detect(ref["frame"], 0)
    finally:
        landmarker.close()
    assert xy is not None and xy.shape == (468, 2) and xy.dtype == np.float64
    # mediapipe 0.10.21 vs the reference's 0.10.11: sub-pixel mesh differences at most.
    assert np.abs(xy - ref["mediapipe_landmarks_xy"]).max() < 1.0
    assert np.abs(anchor_points(xy) - ref["landmarks3"]).max() <= 1.0


@needs_face_mesh
def test_tracking_finds_faces_on_real_demo_frames() -> None:
    frames = decode("demo2_video.mp4", 6)
    landmarker = create_landmarker(video_mode=True, download=False)
    try:
        meshes = [landmarker.detect(f, i) for i, f in enumerate(frames)]
    finally:
        landmarker.close()
    assert all(m is not None for m in meshes)
    h, w = frames.shape[1:3]
    for mesh in meshes:
        anchors = anchor_points(mesh, rounded=False)
        assert (anchors[:, 0] > 0).all() and (anchors[:, 0] < w).all() and (anchors[:, 1] < h).all()
        assert anchors[0, 0] < anchors[1, 0]  # image-left brow left of image-right brow
        assert anchors[2, 1] > anchors[:2, 1].max()  # nose below the brows
        assert 40 < np.linalg.norm(anchors[1] - anchors[0]) < 400


@needs_face_mesh
@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_returns_none(kind: str) -> None:
    rng = np.random.default_rng(0)
    image = np.full((360, 240, 3), 128, np.uint8) if kind == "blank" else rng.integers(0, 256, (360, 240, 3), np.uint8)
    landmarker = MediaPipeFaceMesh(static_image_mode=False)
    try:
        assert landmarker.detect(image, 0) is None
        assert landmarker.detect(image, 1) is None
    finally:
        landmarker.close()


@needs_face_mesh
def test_frame_input_is_validated() -> None:
    landmarker = MediaPipeFaceMesh()
    try:
        with pytest.raises(InvalidInputError, match="frame"):
            landmarker.detect(np.zeros((32, 32, 3), np.float32), 0)
        with pytest.raises(InvalidInputError, match="frame"):
            landmarker.detect(np.zeros((32, 32), np.uint8), 0)
    finally:
        landmarker.close()


def test_tasks_backend_without_model_file_is_a_clear_missing_weights_error(tmp_path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        resolve_face_landmarker_task(tmp_path, download=False)
    assert FACE_LANDMARKER_TASK in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(MissingWeightsError, match=FACE_LANDMARKER_TASK):
        create_landmarker(backend="tasks", models_dir=tmp_path, download=False)
    with pytest.raises(MissingWeightsError, match="not found"):
        MediaPipeTasksLandmarker(tmp_path / FACE_LANDMARKER_TASK)


def test_existing_task_file_is_found_without_download(tmp_path) -> None:
    (tmp_path / FACE_LANDMARKER_TASK).write_bytes(b"x")
    assert resolve_face_landmarker_task(tmp_path, download=False) == tmp_path / FACE_LANDMARKER_TASK


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="backend"):
        create_landmarker(backend="dlib")


def test_tasks_landmarker_wiring_with_a_stub_model(tmp_path, monkeypatch) -> None:
    """VIDEO-mode timestamps increase, results are converted to pixels, no face -> None.

    The real Tasks model cannot be obtained offline; mediapipe's factory is replaced by a stub.
    """
    mp = pytest.importorskip("mediapipe")
    from types import SimpleNamespace

    calls: list[int] = []

    class StubLandmarker:
        def detect_for_video(self, image, timestamp_ms):
            calls.append(timestamp_ms)
            if len(calls) == 2:
                return SimpleNamespace(face_landmarks=[])
            points = [SimpleNamespace(x=0.5, y=0.25, z=0.0)] * 478
            return SimpleNamespace(face_landmarks=[points])

        def close(self):
            pass

    factory = staticmethod(lambda options: StubLandmarker())
    monkeypatch.setattr(mp.tasks.vision.FaceLandmarker, "create_from_options", factory)
    model = tmp_path / FACE_LANDMARKER_TASK
    model.write_bytes(b"stub")
    landmarker = create_landmarker(backend="tasks", models_dir=tmp_path, download=False, fps=30.0)
    assert isinstance(landmarker, MediaPipeTasksLandmarker)
    frame = np.zeros((40, 20, 3), np.uint8)
    xy = landmarker.detect(frame, 0)
    assert xy.shape == (478, 2) and np.allclose(xy, [10.0, 10.0])
    assert landmarker.detect(frame, 1) is None
    landmarker.detect(frame, 1)  # same index again: timestamp must still increase
    landmarker.reset()
    landmarker.detect(frame, 0)
    assert calls == [0, 33, 34, 0]
