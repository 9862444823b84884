"""Shared test helpers.

Small fixtures (configs, key lists) live in ``tests/fixtures``. The large reference tensors produced
by the official implementation stay in ``../shared/parity`` (or ``$LATENTSYNC_PARITY_DIR``); tests that
need them are skipped cleanly when that folder is absent (a user's clone).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# OpenMP threads sleep instead of spin-waiting between parallel regions: on a shared, oversubscribed
# CPU the default spinning made small forward passes 10-20x slower (measured 20 s vs 1.1 s wall for
# a tiny U-Net forward at load 11 on 2 cores). Must be set before torch initialises OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(os.environ.get("LATENTSYNC_SHARED_DIR", REPO_ROOT.parent / "shared"))
PARITY = Path(os.environ.get("LATENTSYNC_PARITY_DIR", SHARED / "parity"))
MEDIA = SHARED / "media"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def parity_file(name: str) -> Path:
    """Path of a reference file in the parity folder; skips the calling test when it is absent."""
    path = PARITY / name
    if not path.exists():
        pytest.skip(f"parity data {name} not found in {PARITY} (set LATENTSYNC_PARITY_DIR)")
    return path


def media_file(name: str) -> Path:
    """Path of a demo clip in ../shared/media; skips the calling test when it is absent."""
    path = MEDIA / name
    if not path.exists():
        pytest.skip(f"media file {name} not found in {MEDIA}")
    return path


def load_fixture_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread: on a shared, loaded CPU, two threads make the small
    forwards of the tiny models many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def readonly_folder(tmp_path):
    """A folder in which no file can be created: a 0o555 folder, or ``/sys`` when running as root
    (root writes into 0o555 folders); skips where neither works."""
    folder = Path("/sys") if os.geteuid() == 0 else tmp_path / "ro"
    if folder != Path("/sys"):
        folder.mkdir()
        folder.chmod(0o555)
    if not folder.is_dir():
        pytest.skip("no read-only folder available")
    return folder
