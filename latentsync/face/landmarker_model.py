"""Where the mediapipe Tasks model ``face_landmarker.task`` is found, and its verified download.

mediapipe >= 0.10.30 has only the Tasks API, whose ``FaceLandmarker`` needs this model bundle
(Apache-2.0, Google's mediapipe model storage; 3,758,596 bytes). mediapipe <= 0.10.21 bundles the
legacy face mesh and needs no file. Lookup order (first existing file wins):

1. an explicit path (a file, or a folder holding ``face_landmarker.task``);
2. each ComfyUI folder registered for ``latentsync`` (``models/latentsync`` and the
   ``extra_model_paths.yaml`` entries, in ComfyUI's order), as ``<folder>/face_landmarker.task``
   or ``<folder>/mediapipe/face_landmarker.task``;
3. ``$LATENTSYNC_MODELS_DIR`` (same two names);
4. the user cache ``~/.cache/latentsync/mediapipe/face_landmarker.task`` (``$XDG_CACHE_HOME``
   replaces ``~/.cache``).

When none exists and downloads are allowed (``download=True`` and ``HF_HUB_OFFLINE`` not set), the
file is fetched into the first folder of that list (the explicit path when given, else the first
ComfyUI folder's ``mediapipe/``, else the env-var folder's ``mediapipe/``, else the cache), checked
against its sha256 and renamed into place only when it matches.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterable

from latentsync.errors import MissingWeightsError
from latentsync.weights import hub_offline

FACE_LANDMARKER_TASK = "face_landmarker.task"
FACE_LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
MODELS_DIR_ENV = "LATENTSYNC_MODELS_DIR"
SUBFOLDER = "mediapipe"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/latentsync/mediapipe`` (default ``~/.cache/latentsync/mediapipe``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "latentsync" / SUBFOLDER


def candidate_paths(model_path: str | Path | None = None, search_dirs: Iterable[str | Path] = ()) -> list[Path]:
    """Every place ``face_landmarker.task`` is looked for, in lookup order (module docstring).

    Args:
        model_path: explicit file or folder; when given it is the only candidate.
        search_dirs: ComfyUI's ``latentsync`` model folders (``folder_paths.get_folder_paths``).

    Returns:
        file paths (existing or not), without duplicates.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        return [path / FACE_LANDMARKER_TASK if path.is_dir() or not path.suffix else path]
    roots = [Path(d).expanduser() for d in search_dirs]
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        roots.append(Path(env).expanduser())
    out: list[Path] = []
    for root in roots:
        out += [root / SUBFOLDER / FACE_LANDMARKER_TASK, root / FACE_LANDMARKER_TASK]
    out.append(user_cache_dir() / FACE_LANDMARKER_TASK)
    return list(dict.fromkeys(out))


def _fetch(url: str, fileobj) -> None:
    """Indirection for tests (monkeypatch this, never the network): copy ``url`` into ``fileobj``."""
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (fixed https URL)
        while chunk := response.read(1 << 20):
            fileobj.write(chunk)


def download_face_landmarker_task(target: str | Path) -> Path:
    """Download ``face_landmarker.task`` to ``target``, verified by sha256, written atomically.

    The bytes go to a temporary file beside ``target``; it is renamed to ``target`` only when its
    sha256 equals :data:`FACE_LANDMARKER_SHA256`, and removed otherwise.

    Raises:
        MissingWeightsError: the download failed or gave other bytes (message names ``target``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            _fetch(FACE_LANDMARKER_URL, f)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        if digest != FACE_LANDMARKER_SHA256:
            raise MissingWeightsError(
                f"{FACE_LANDMARKER_TASK}: download from {FACE_LANDMARKER_URL} has sha256 {digest}, "
                f"expected {FACE_LANDMARKER_SHA256}; nothing was written to {target}"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def resolve_face_landmarker_task(
    model_path: str | Path | None = None,
    search_dirs: Iterable[str | Path] = (),
    download: bool = True,
) -> Path:
    """Path of ``face_landmarker.task``: the first existing candidate, else a verified download.

    Args:
        model_path: explicit file or folder (then nothing else is searched).
        search_dirs: ComfyUI's ``latentsync`` model folders, searched before the env var and cache.
        download: fetch the file when missing (also needs ``HF_HUB_OFFLINE`` unset).

    Returns:
        path of an existing file.

    Raises:
        MissingWeightsError: not found and not downloadable (downloads off, offline, failed or
            sha256 mismatch); the message names the first place to put the file (the ComfyUI
            folder when there is one) and every other place searched.
    """
    candidates = candidate_paths(model_path, search_dirs)
    for path in candidates:
        if path.is_file():
            return path
    target = candidates[0]
    searched = ", ".join(str(p) for p in candidates[1:])
    hint = (
        f"mediapipe face landmarker model missing: put {FACE_LANDMARKER_TASK} (from {FACE_LANDMARKER_URL}, "
        f"sha256 {FACE_LANDMARKER_SHA256[:12]}...) at {target}"
        + (f" (also searched: {searched})" if searched else "")
        + "; mediapipe >= 0.10.30 needs it, mediapipe 0.10.21 bundles its own face mesh"
    )
    if not download:
        raise MissingWeightsError(f"{hint} (downloads disabled)")
    if hub_offline():
        raise MissingWeightsError(f"{hint} (HF_HUB_OFFLINE is set)")
    try:
        return download_face_landmarker_task(target)
    except OSError as err:
        raise MissingWeightsError(f"{hint} (download failed: {err})") from err
    except MissingWeightsError as err:
        raise MissingWeightsError(f"{hint} ({err})") from err
