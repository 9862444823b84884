"""mediapipe landmarks and the anchor mapping (spec 1.7; parity README section 6).

The parity reference used mediapipe 0.10.11 FaceMesh (static mode) on frame 0 of demo1 and mapped
the mesh to InsightFace-style 106 points; ``landmarks3`` are the three anchors the official
alignment consumed. Our legacy mesh (mediapipe 0.10.21 in CI) must land on the same integer anchors.
The Tasks backend (real ``face_landmarker.task``) is asked the same questions; its model is another
network, so its anchors are compared with measured bounds (bench/bench_tasks_alignment.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import media_file, parity_file, tasks_model
from latentsync.errors import InvalidInputError, MissingWeightsError
from latentsync.face.landmarker_model import FACE_LANDMARKER_TASK, resolve_face_landmarker_task
from latentsync.face.landmarks import (
    TASKS_ANCHOR_MODEL,
    MediaPipeFaceMesh,
    MediaPipeTasksLandmarker,
    TasksAnchorModel,
    TasksSmoothingLead,
    anchor_points,
    anchors_from_106,
    create_landmarker,
    face_frame,
    has_legacy_face_mesh,
    mesh_to_106,
    pose_features,
    to_legacy_anchor_convention,
)

needs_face_mesh = pytest.mark.skipif(not has_legacy_face_mesh(), reason="mediapipe without bundled FaceMesh")
BACKENDS = ("legacy", "tasks")


def make_landmarker(backend: str, video_mode: bool = True, **kwargs):
    """A landmarker of one backend; skips when it is not available (no bundled mesh / no model)."""
    if backend == "legacy":
        if not has_legacy_face_mesh():
            pytest.skip("mediapipe without bundled FaceMesh")
        return MediaPipeFaceMesh(static_image_mode=not video_mode)
    return MediaPipeTasksLandmarker(tasks_model(), video_mode=video_mode, **kwargs)


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("static", [True, False])
def test_mediapipe_on_reference_frame_matches_landmarks3(ref: dict, static: bool, backend: str) -> None:
    landmarker = make_landmarker(backend, video_mode=not static)
    try:
        xy = landmarker.detect(ref["frame"], 0)
    finally:
        landmarker.close()
    if backend == "legacy":
        assert xy is not None and xy.shape == (468, 2) and xy.dtype == np.float64
        # mediapipe 0.10.21 vs the reference's 0.10.11: sub-pixel mesh differences at most.
        assert np.abs(xy - ref["mediapipe_landmarks_xy"]).max() < 1.0
        assert np.abs(anchor_points(xy) - ref["landmarks3"]).max() <= 1.0
        return
    assert xy is not None and xy.shape == (478, 2) and xy.dtype == np.float64
    # Another network: on this first (detected, not tracked) frame the whole Tasks mesh sits a few px
    # off the legacy one (median point distance 6.9 px, face ~190 px wide), the rounded anchors 8 px
    # at worst with or without the anchor correction; tracked frames agree better (test below).
    assert np.abs(anchor_points(xy) - ref["landmarks3"]).max() <= 9.0
    assert np.median(np.linalg.norm(xy[:468] - ref["mediapipe_landmarks_xy"], axis=1)) < 8.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_tracking_finds_faces_on_real_demo_frames(backend: str) -> None:
    frames = decode("demo2_video.mp4", 6)
    landmarker = make_landmarker(backend, video_mode=True)
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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_returns_none(kind: str, backend: str) -> None:
    rng = np.random.default_rng(0)
    image = np.full((360, 240, 3), 128, np.uint8) if kind == "blank" else rng.integers(0, 256, (360, 240, 3), np.uint8)
    landmarker = make_landmarker(backend, video_mode=True)
    try:
        assert landmarker.detect(image, 0) is None
        assert landmarker.detect(image, 1) is None
    finally:
        landmarker.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_input_is_validated(backend: str) -> None:
    landmarker = make_landmarker(backend)
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
        create_landmarker(backend="tasks", model_path=tmp_path, download=False)
    with pytest.raises(MissingWeightsError, match="not found"):
        MediaPipeTasksLandmarker(tmp_path / FACE_LANDMARKER_TASK)


def test_existing_task_file_is_found_without_download(tmp_path) -> None:
    (tmp_path / FACE_LANDMARKER_TASK).write_bytes(b"x")
    assert resolve_face_landmarker_task(tmp_path, download=False) == tmp_path / FACE_LANDMARKER_TASK


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="backend"):
        create_landmarker(backend="dlib")


def test_tasks_landmarker_wiring_with_a_stub_model(tmp_path, monkeypatch) -> None:
    """VIDEO-mode timestamps increase, results are converted to pixels (then to the legacy anchor
    convention), no face -> None. mediapipe's factory is replaced by a stub (exact timestamps and
    outputs); the real model is tested above."""
    mp = pytest.importorskip("mediapipe")
    from types import SimpleNamespace

    calls: list[int] = []
    norm = np.random.default_rng(3).uniform(0.2, 0.8, (478, 2))

    class StubLandmarker:
        def detect_for_video(self, image, timestamp_ms):
            calls.append(timestamp_ms)
            if len(calls) == 2:
                return SimpleNamespace(face_landmarks=[])
            return SimpleNamespace(face_landmarks=[[SimpleNamespace(x=x, y=y, z=0.0) for x, y in norm]])

        def close(self):
            pass

    factory = staticmethod(lambda options: StubLandmarker())
    monkeypatch.setattr(mp.tasks.vision.FaceLandmarker, "create_from_options", factory)
    model = tmp_path / FACE_LANDMARKER_TASK
    model.write_bytes(b"stub")
    landmarker = create_landmarker(backend="tasks", model_path=tmp_path, download=False, fps=30.0)
    assert isinstance(landmarker, MediaPipeTasksLandmarker)
    frame = np.zeros((40, 20, 3), np.uint8)
    xy = landmarker.detect(frame, 0)
    assert xy.shape == (478, 2)
    np.testing.assert_allclose(xy, to_legacy_anchor_convention(norm * [20.0, 40.0]))
    assert landmarker.detect(frame, 1) is None
    landmarker.detect(frame, 1)  # same index again: timestamp must still increase
    landmarker.reset()
    landmarker.detect(frame, 0)
    assert calls == [0, 33, 34, 0]


def test_tasks_landmarker_adds_the_smoothing_lead_to_its_smoothed_stream(tmp_path, monkeypatch) -> None:
    """Single-face VIDEO mode: the face gets offsets plus the lead of its own stream (first frame:
    none; restarted after a frame without the face and after a skipped frame index)."""
    mp = pytest.importorskip("mediapipe")
    from types import SimpleNamespace

    base = np.random.default_rng(4).uniform(0.3, 0.6, (478, 2))
    shown: list[np.ndarray] = []

    class StubLandmarker:
        def detect_for_video(self, image, timestamp_ms):
            norm = base + [0.002 * len(shown), 0.001 * len(shown)]  # moves every call
            shown.append(norm * [200.0, 400.0])
            if len(shown) == 3:
                return SimpleNamespace(face_landmarks=[])
            return SimpleNamespace(face_landmarks=[[SimpleNamespace(x=x, y=y, z=0.0) for x, y in norm]])

        def close(self):
            pass

    monkeypatch.setattr(mp.tasks.vision.FaceLandmarker, "create_from_options", staticmethod(lambda o: StubLandmarker()))
    (tmp_path / FACE_LANDMARKER_TASK).write_bytes(b"stub")
    landmarker = MediaPipeTasksLandmarker(tmp_path / FACE_LANDMARKER_TASK, fps=25.0)
    frame = np.zeros((400, 200, 3), np.uint8)
    got = [landmarker.detect(frame, i) for i in (0, 1, 2, 3, 4, 6)]
    lead = TasksSmoothingLead()
    expected_leads = [lead(shown[0], 0), lead(shown[1], 40), None, np.zeros((3, 2)), None, np.zeros((3, 2))]
    lead.reset()
    lead(shown[3], 120)
    expected_leads[4] = lead(shown[4], 160)
    assert got[2] is None and np.abs(expected_leads[1]).max() > 0.1 and np.abs(expected_leads[4]).max() > 0.1
    for xy, mesh, shift in zip(got, shown, expected_leads):
        if shift is not None:
            np.testing.assert_allclose(xy, to_legacy_anchor_convention(mesh, shift), atol=1e-9)


def test_smoothing_lead_undoes_mediapipes_filter_on_a_steadily_moving_face() -> None:
    """A face moving at constant speed, One-Euro-filtered the way mediapipe does (per coordinate,
    speed in face-box sizes per second low-passed at 1 Hz, cutoff = min_cutoff + beta |speed|):
    the lead with the same settings puts the anchors back where the unfiltered face is, once the
    speed estimate has settled. Still face: no lead; first frame: none."""
    rng = np.random.default_rng(5)
    face = rng.uniform(0, 200, (478, 2))
    velocity = np.array([1.5, -0.8])  # px per frame
    fps, min_cutoff, beta = 25.0, 4.0, 80.0
    alpha = lambda cutoff: 1.0 / (1.0 + fps / (2 * np.pi * cutoff))  # noqa: E731
    box = float(np.ptp(face[:, 0]) + np.ptp(face[:, 1])) / 2
    lead, y, x_last, speed = TasksSmoothingLead(min_cutoff=min_cutoff, beta=beta), None, None, 0.0
    for t in range(80):
        x = face + t * velocity
        if y is None:
            y = x.copy()
        else:
            speed = speed + alpha(1.0) * ((x - x_last) * fps / box - speed)
            y = y + alpha(min_cutoff + beta * np.abs(speed)) * (x - y)
        x_last = x
        shift = lead(y, t * 40.0)
        if t == 0:
            np.testing.assert_array_equal(shift, 0.0)
    lag = anchor_points(x, rounded=False) - anchor_points(y, rounded=False)
    assert np.abs(lag).max() > 0.05
    np.testing.assert_allclose(shift, lag, atol=1e-6)
    still = TasksSmoothingLead()
    assert [np.abs(still(face, t)).max() for t in (0, 40, 80)] == [0.0, 0.0, 0.0]


def test_legacy_anchor_convention_moves_only_the_anchor_points_by_the_offsets(ref: dict) -> None:
    """The correction shifts each anchor by its face-frame offset for the face's pose, the same way
    on a mirrored face; a lead adds to it."""
    xy = ref["mediapipe_landmarks_xy"].astype(np.float64)
    fixed = to_legacy_anchor_convention(xy)
    before, after = anchor_points(xy, rounded=False), anchor_points(fixed, rounded=False)
    _, axes, scale = face_frame(before)
    offsets = TASKS_ANCHOR_MODEL.face_offsets(xy)
    np.testing.assert_allclose((after - before) @ axes.T / scale, offsets, atol=1e-12)
    assert 0.2 < np.abs(after - before).max() < 2.0  # under 2 % of the ~100 px brow distance
    # Pose: with its only gain on the chin's y (feature 3), the nose y offset follows the chin's
    # deviation from the mean, clipped at `clip` (2) spreads.
    features = pose_features(xy)
    gains = np.zeros((6, 8))
    gains[5, 3] = 1.0
    for deviation, expected in ((0.01, 0.01), (-0.05, -0.05), (0.5, 0.2)):
        mean = features - np.eye(8)[3] * deviation
        pose_model = TasksAnchorModel(np.zeros((3, 2)), mean, np.full(8, 0.1), gains)
        np.testing.assert_allclose(pose_model.face_offsets(xy), [[0, 0], [0, 0], [0, expected]], atol=1e-12)
    moved = np.nonzero(np.abs(fixed - xy).max(axis=1) > 0)[0]
    assert len(moved) == 24 and 1 in moved and 70 in moved and 300 in moved  # 10 + 10 brow, 4 nose points
    # Mirrored frame: same face-frame offsets (the frame's y axis follows the nose), mirrored pixels.
    mirrored = xy.copy()
    mirrored[:, 0] = 1080 - mirrored[:, 0]
    shift = anchor_points(to_legacy_anchor_convention(mirrored), rounded=False) - anchor_points(mirrored, rounded=False)
    np.testing.assert_allclose(shift * [-1, 1], after - before, atol=1e-9)
    # A lead (pixels) adds to each anchor's shift.
    lead = np.array([[0.5, -0.25], [1.0, 0.0], [-0.75, 2.0]])
    led = anchor_points(to_legacy_anchor_convention(xy, lead), rounded=False)
    np.testing.assert_allclose(led - after, lead, atol=1e-9)


def test_tasks_and_legacy_agree_on_tracked_demo_frames() -> None:
    """Both backends on the same 40 tracked frames of demo3 (held out from the correction's fit): all
    faces found; the corrected Tasks anchors (pose-dependent offsets + smoothing lead, as the
    landmarker makes them: 1.97 px) are closer to the legacy ones than without the lead (2.34) and
    than the raw ones (3.60)."""
    if not has_legacy_face_mesh():
        pytest.skip("mediapipe without bundled FaceMesh (needed as the reference)")
    frames = decode("demo3_video.mp4", 40)
    legacy, tasks = make_landmarker("legacy"), make_landmarker("tasks", fps=30.0, legacy_anchors=False)
    try:
        pairs = [(legacy.detect(f, i), tasks.detect(f, i)) for i, f in enumerate(frames)]
    finally:
        legacy.close()
        tasks.close()
    assert all(a is not None and b is not None for a, b in pairs)
    lead = TasksSmoothingLead()
    ref = np.stack([anchor_points(a, rounded=False) for a, _ in pairs])
    raw = np.stack([anchor_points(b, rounded=False) for _, b in pairs])
    no_lead = np.stack([anchor_points(to_legacy_anchor_convention(b), rounded=False) for _, b in pairs])
    fixed = np.stack([
        anchor_points(to_legacy_anchor_convention(b, lead(b, round(i * 1000 / 30))), rounded=False)
        for i, (_, b) in enumerate(pairs)
    ])
    worst = lambda a: np.abs(a - ref).max(axis=(1, 2)).mean()  # noqa: E731
    assert worst(fixed) < worst(no_lead) < worst(raw) < 5.0, (worst(fixed), worst(no_lead), worst(raw))
    assert worst(fixed) < 2.5
