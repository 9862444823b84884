"""Lookup order and verified download of ``face_landmarker.task`` (no network: the fetch is replaced)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conftest import SHARED
from latentsync.errors import MissingWeightsError
from latentsync.face import landmarker_model as lm
from latentsync.face.landmarker_model import (
    FACE_LANDMARKER_SHA256,
    FACE_LANDMARKER_TASK,
    candidate_paths,
    resolve_face_landmarker_task,
)

REAL_MODEL = SHARED / "models" / "mediapipe" / FACE_LANDMARKER_TASK


@pytest.fixture
def dirs(tmp_path, monkeypatch) -> dict[str, Path]:
    """ComfyUI folders, env folder and user cache, all empty; downloads would fail loudly."""
    out = {k: tmp_path / k for k in ("comfy", "extra", "env", "xdg")}
    for d in out.values():
        d.mkdir()
    monkeypatch.setenv(lm.MODELS_DIR_ENV, str(out["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(out["xdg"]))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(url, fileobj):
        raise AssertionError("test tried to download")

    monkeypatch.setattr(lm, "_fetch", no_network)
    return out


def put(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"model")
    return path


def test_lookup_order_comfy_folders_then_env_then_cache(dirs) -> None:
    search = [dirs["comfy"], dirs["extra"]]
    cache = put(dirs["xdg"] / "latentsync" / "mediapipe" / FACE_LANDMARKER_TASK)
    assert resolve_face_landmarker_task(search_dirs=search, download=False) == cache
    env = put(dirs["env"] / "mediapipe" / FACE_LANDMARKER_TASK)
    assert resolve_face_landmarker_task(search_dirs=search, download=False) == env
    extra = put(dirs["extra"] / FACE_LANDMARKER_TASK)  # an extra_model_paths entry, file at its top
    assert resolve_face_landmarker_task(search_dirs=search, download=False) == extra
    top = put(dirs["comfy"] / FACE_LANDMARKER_TASK)
    assert resolve_face_landmarker_task(search_dirs=search, download=False) == top
    sub = put(dirs["comfy"] / "mediapipe" / FACE_LANDMARKER_TASK)
    assert resolve_face_landmarker_task(search_dirs=search, download=False) == sub
    # An explicit file or folder wins over everything and is the only place looked at.
    explicit = put(dirs["extra"] / "mine" / FACE_LANDMARKER_TASK)
    assert resolve_face_landmarker_task(explicit, search_dirs=search, download=False) == explicit
    assert resolve_face_landmarker_task(explicit.parent, search_dirs=search, download=False) == explicit
    with pytest.raises(MissingWeightsError, match="nowhere"):
        resolve_face_landmarker_task(dirs["extra"] / "nowhere", search_dirs=search, download=False)


def test_offline_error_names_the_comfyui_folder_first(dirs, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    search = [dirs["comfy"], dirs["extra"]]
    with pytest.raises(MissingWeightsError) as err:
        resolve_face_landmarker_task(search_dirs=search)
    msg = str(err.value)
    first = str(dirs["comfy"] / "mediapipe" / FACE_LANDMARKER_TASK)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg and FACE_LANDMARKER_SHA256[:12] in msg
    assert msg.index(first) < msg.index(str(dirs["env"])) < msg.index(str(dirs["xdg"]))
    # Without ComfyUI folders the env folder comes first, then the cache.
    with pytest.raises(MissingWeightsError, match=f"at {dirs['env'] / 'mediapipe' / FACE_LANDMARKER_TASK}"):
        resolve_face_landmarker_task(download=False)
    assert candidate_paths()[-1] == dirs["xdg"] / "latentsync" / "mediapipe" / FACE_LANDMARKER_TASK


def test_download_is_verified_and_atomic(dirs, monkeypatch) -> None:
    target = dirs["comfy"] / "mediapipe" / FACE_LANDMARKER_TASK

    def wrong_bytes(url, fileobj):
        fileobj.write(b"<html>captive portal</html>")

    monkeypatch.setattr(lm, "_fetch", wrong_bytes)
    with pytest.raises(MissingWeightsError, match="sha256"):
        resolve_face_landmarker_task(search_dirs=[dirs["comfy"]])
    assert list(target.parent.iterdir()) == []  # no file, no leftover .part

    def broken(url, fileobj):
        fileobj.write(b"partial")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(lm, "_fetch", broken)
    with pytest.raises(MissingWeightsError, match="download failed: connection reset"):
        resolve_face_landmarker_task(search_dirs=[dirs["comfy"]])
    assert list(target.parent.iterdir()) == []


def test_download_with_the_right_bytes_lands_in_the_comfyui_folder(dirs, monkeypatch) -> None:
    if not REAL_MODEL.is_file():
        pytest.skip(f"real {FACE_LANDMARKER_TASK} not found at {REAL_MODEL}")
    data = REAL_MODEL.read_bytes()
    assert hashlib.sha256(data).hexdigest() == FACE_LANDMARKER_SHA256
    urls = []

    def serve(url, fileobj):
        urls.append(url)
        fileobj.write(data)

    monkeypatch.setattr(lm, "_fetch", serve)
    got = resolve_face_landmarker_task(search_dirs=[dirs["comfy"], dirs["extra"]])
    assert got == dirs["comfy"] / "mediapipe" / FACE_LANDMARKER_TASK and got.read_bytes() == data
    assert urls == [lm.FACE_LANDMARKER_URL] and [p.name for p in got.parent.iterdir()] == [FACE_LANDMARKER_TASK]
    assert resolve_face_landmarker_task(search_dirs=[dirs["comfy"]]) == got and len(urls) == 1
