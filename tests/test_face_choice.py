"""Face tracks, the face choice (largest / index / point / auto speaker) and FaceAligner following one face."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import media_file
from latentsync.errors import InvalidInputError
from latentsync.face.aligner import FaceAligner
from latentsync.face.landmarks import has_legacy_face_mesh
from latentsync.face.speaker import FaceChoice, choose_speaker, parse_face_choice, pick_face, speech_envelope
from latentsync.face.tracks import FaceTracker, FaceTracks, face_box


def square_mesh(cx: float, cy: float, size: float, opening: float = 0.0) -> np.ndarray:
    """A fake 468-point mesh spread over a box, with the lip and eye points placed for ``opening``."""
    rng = np.random.default_rng(int(cx * 7 + cy))
    xy = np.stack([cx + (rng.random(468) - 0.5) * size, cy + (rng.random(468) - 0.5) * size], axis=1)
    xy[33], xy[263] = (cx - size / 4, cy - size / 8), (cx + size / 4, cy - size / 8)
    xy[13], xy[14] = (cx, cy + size / 4), (cx, cy + size / 4 + opening * size / 2)
    return xy


class SceneLandmarker:
    """Returns the meshes listed for each frame index (list of meshes per frame)."""

    def __init__(self, frames: list[list[np.ndarray]]) -> None:
        self.frames = frames

    def detect_faces(self, frame: np.ndarray, frame_index: int) -> list[np.ndarray]:
        return list(self.frames[frame_index])

    def detect(self, frame: np.ndarray, frame_index: int) -> np.ndarray | None:
        return next(iter(self.detect_faces(frame, frame_index)), None)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "text, expected",
    [("largest", FaceChoice("largest")), ("AUTO", FaceChoice("auto")), ("index:1", FaceChoice("index", index=1)),
     ("point:0.25,0.5", FaceChoice("point", point=(0.25, 0.5)))],
)
def test_parse_face_choice(text: str, expected: FaceChoice) -> None:
    assert parse_face_choice(text) == expected
    assert parse_face_choice(str(expected)) == expected


@pytest.mark.parametrize("text", ["biggest", "index:-1", "index:x", "point:1.5,0.2", "point:0.3"])
def test_parse_face_choice_rejects(text: str) -> None:
    with pytest.raises(InvalidInputError, match="^face: expected largest"):
        parse_face_choice(text)


def test_pick_face_rules() -> None:
    boxes = {0: np.array([600, 100, 700, 200]), 1: np.array([100, 100, 400, 400]), 2: np.array([800, 100, 900, 200])}
    assert pick_face(FaceChoice("largest"), boxes, (500, 1000)) == 1
    assert pick_face(FaceChoice("index", index=0), boxes, (500, 1000)) == 1  # leftmost
    assert pick_face(FaceChoice("index", index=2), boxes, (500, 1000)) == 2
    assert pick_face(FaceChoice("index", index=3), boxes, (500, 1000)) is None
    assert pick_face(FaceChoice("point", point=(0.65, 0.3)), boxes, (500, 1000)) == 0
    assert pick_face(FaceChoice("largest"), {}, (500, 1000)) is None


def test_tracker_keeps_identity_drops_duplicates_and_resumes() -> None:
    tracker = FaceTracker(max_gap=5)
    left, right = square_mesh(100, 100, 80), square_mesh(400, 100, 80)
    assert tracker.update(0, [left, right]) == {0: 0, 1: 1}
    # order swapped by the detector, and a duplicate of the left face slightly offset: same ids
    dup = square_mesh(110, 105, 80)
    assert tracker.update(1, [right, left, dup]) == {0: 1, 1: 0}
    assert tracker.update(2, [right]) == {1: 0}  # left face lost
    assert tracker.update(5, [square_mesh(104, 100, 80), right]) == {0: 0, 1: 1}  # resumes its track
    assert tracker.update(12, [square_mesh(104, 100, 80)]) == {2: 0}  # gap > max_gap: a new track
    np.testing.assert_allclose(face_box(left)[:2], left.min(0))


def test_aligner_follows_the_chosen_face_and_leaves_the_other() -> None:
    # two faces; frame 3 reports only the right one, in another order, plus a duplicate of it
    left, right = square_mesh(300, 300, 200), square_mesh(800, 300, 260)
    scene = [[left, right], [right, left], [left, right], [right, square_mesh(806, 303, 260)], [left, right]]
    frames = np.zeros((5, 600, 1100, 3), np.uint8)
    for choice, expect_x in (("largest", 800), ("index:0", 300), ("point:0.2,0.5", 300), ("index:1", 800)):
        aligner = FaceAligner(256, landmarker=SceneLandmarker(scene), smoothing="none", face=choice)
        crops = aligner.align(frames)
        used = aligner.last_raw_anchors
        has = [i for i in range(5) if i not in crops.no_face_indices]
        assert np.allclose(used[has, 2, 0], expect_x, atol=140), choice  # nose near the chosen face's centre
        if expect_x == 300:
            assert crops.no_face_indices == [3]  # the chosen face is absent there: passed through
        else:
            assert crops.no_face_indices == []


def test_speech_envelope_follows_the_formant_band() -> None:
    sr, fps = 16000, 25.0
    t = np.arange(sr * 2) / sr
    # 2 kHz tone switched on and off at 4 Hz over a constant 150 Hz hum: the envelope follows the bursts
    bursts = (np.sin(2 * np.pi * 4 * t) > 0).astype(float)
    x = 0.2 * np.sin(2 * np.pi * 150 * t) + 0.2 * bursts * np.sin(2 * np.pi * 2000 * t)
    env = speech_envelope(x, sr, fps, 50)
    on = (np.sin(2 * np.pi * 4 * np.arange(50) / fps) > 0.5)
    off = (np.sin(2 * np.pi * 4 * np.arange(50) / fps) < -0.5)
    assert env.shape == (50,) and env[on].mean() - env[off].mean() > 3
    with pytest.raises(InvalidInputError, match="sample_rate"):
        speech_envelope(x, 4000, fps, 50)


def synthetic_tracks(mouth: np.ndarray) -> FaceTracks:
    t, n = mouth.shape[:2]
    boxes = np.zeros((t, n, 4), np.float32)
    for k in range(t):
        boxes[k] = [30 * k, 0, 30 * k + 10 + k, 10 + k]
    return FaceTracks(0, (20, 30 * t), boxes, np.zeros((t, n, 3, 2)), np.zeros((t, n, 3, 2)), mouth.astype(np.float32))


def test_choose_speaker_on_synthetic_tracks() -> None:
    rng = np.random.default_rng(0)
    n, fps = 300, 25.0
    speech = rng.random(n)  # the speaker's mouth follows the speech, the other moves on its own
    mouth = np.stack([rng.random((n, 2)), np.stack([speech, speech], 1) + 0.2 * rng.random((n, 2))])
    tracks = synthetic_tracks(mouth)
    assert (choose_speaker(tracks, speech, fps) == 1).all()  # from the first frame on
    assert (choose_speaker(tracks, np.roll(mouth[0, :, 0], 2), fps) == 0).mean() > 0.95  # lag found
    mouth[1, 100:120] = np.nan  # the speaker is lost for a moment, then back
    ids = choose_speaker(synthetic_tracks(mouth), speech, fps)
    assert (ids[100:120] == -1).all() and (ids[120:] == 1).all()  # absent: passed through, not the other face
    with pytest.raises(InvalidInputError, match="envelope: expected 300"):
        choose_speaker(tracks, speech[:10], fps)


@pytest.mark.skipif(not has_legacy_face_mesh(), reason="mediapipe without bundled FaceMesh")
def test_one_face_video_gives_the_official_single_face_result() -> None:
    """With several faces allowed, a one-face clip is aligned exactly as with mediapipe's single face."""
    from latentsync.face.landmarks import MediaPipeFaceMesh
    from latentsync.video.io import iter_frames

    frames = next(iter_frames(media_file("demo1_video.mp4"), chunk_size=32))
    single = FaceAligner(256, landmarker=MediaPipeFaceMesh(num_faces=1)).align(frames)
    multi = FaceAligner(256).align(frames)  # default: up to 4 faces, largest, tracked
    np.testing.assert_array_equal(single.affine_matrices.numpy(), multi.affine_matrices.numpy())
    assert single.no_face_indices == multi.no_face_indices


def test_stage_choose_speaker_runs_only_for_auto_and_needs_speech() -> None:
    from latentsync.pipeline.stages import choose_speaker as stage_choose_speaker

    def untouched():
        raise AssertionError("frames read for a geometric face choice")
        yield  # pragma: no cover

    rng = np.random.default_rng(1)
    n, fps = 150, 25.0
    speech_env = rng.random(n)
    scene = [[square_mesh(300, 300, 200, o1), square_mesh(800, 300, 200, o2)]
             for o1, o2 in zip(rng.random(n) * 0.3, speech_env * 0.3)]
    frames = np.zeros((n, 600, 1100, 3), np.uint8)
    largest = FaceAligner(256, landmarker=SceneLandmarker(scene), fps=fps)
    stage_choose_speaker(largest, untouched(), None)  # no-op: nothing read, no speech needed
    auto = FaceAligner(256, landmarker=SceneLandmarker(scene), fps=fps, face="auto")
    with pytest.raises(InvalidInputError, match="^audio: face choice 'auto' .* needs the speech"):
        stage_choose_speaker(auto, iter([frames]), None)
    # a "speech" whose 1.5-3 kHz bursts follow the right face's mouth: the right face is chosen
    sr = 16000
    t = np.arange(int(n / fps * sr)) / sr
    amp = np.repeat(speech_env, int(sr / fps))[: t.size]
    stage_choose_speaker(auto, iter([frames[:64], frames[64:]]), 0.3 * amp * np.sin(2 * np.pi * 2000 * t))
    crops = auto.align(frames)
    assert crops.no_face_indices == []
    assert np.all(np.abs(auto.last_raw_anchors[:, 2, 0] - 800) < 120)


def test_paste_function_checks_options_first() -> None:
    from latentsync.pipeline.stages import paste_function

    assert paste_function("mouth", True).keywords == {"device": None, "mode": "mouth", "colour_match": True}
    with pytest.raises(InvalidInputError, match="^paste mode"):
        paste_function("face")
    with pytest.raises(InvalidInputError, match="^colour match"):
        paste_function("full", True)
