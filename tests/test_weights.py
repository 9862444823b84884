"""Weight resolution and (mocked) downloads (latentsync.weights). Never touches the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentsync import weights as W
from latentsync.config import CONFIG_DIR
from latentsync.errors import InvalidInputError, MissingWeightsError


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any un-mocked download attempt fails the test."""

    def forbidden(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("network access attempted")

    monkeypatch.setattr(W, "_hf_hub_download", forbidden)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _fake_official_dir(root: Path, vae_single_file: bool = False) -> Path:
    (root / "whisper").mkdir(parents=True)
    (root / "latentsync_unet.pt").write_bytes(b"u")
    (root / "whisper" / "tiny.pt").write_bytes(b"w")
    if vae_single_file:
        (root / "sd-vae-ft-mse.safetensors").write_bytes(b"v")
    else:
        (root / "sd-vae-ft-mse").mkdir()
        (root / "sd-vae-ft-mse" / "config.json").write_text("{}")
        (root / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors").write_bytes(b"v")
    return root


def test_complete_folder_resolves_without_download(tmp_path):
    root = _fake_official_dir(tmp_path / "ckpt")
    paths = W.resolve_weights(root, resolution=512)
    assert paths.unet == root / "latentsync_unet.pt"
    assert paths.whisper == root / "whisper" / "tiny.pt"
    assert paths.vae == root / "sd-vae-ft-mse"
    assert paths.unet_config == CONFIG_DIR / "unet" / "stage2_512.yaml"
    assert paths.resolution == 512 and paths.syncnet is None
    paths = W.resolve_weights(root, resolution=256, download=False)
    assert paths.unet_config == CONFIG_DIR / "unet" / "stage2.yaml"


def test_repacked_unet_file_is_taken_without_download(tmp_path):
    root = _fake_official_dir(tmp_path / "ckpt")
    (root / "latentsync_unet.pt").rename(root / "latentsync_unet.safetensors")
    assert W.resolve_weights(root, download=False).unet == root / "latentsync_unet.safetensors"
    (root / "latentsync_unet.pt").write_bytes(b"u")  # the official file wins when both are there
    assert W.resolve_weights(root, download=False).unet == root / "latentsync_unet.pt"


def test_single_file_vae_and_config_marker(tmp_path):
    root = _fake_official_dir(tmp_path / "ckpt", vae_single_file=True)
    (root / "latentsync_unet.yaml").write_text("model: {}\n")
    paths = W.resolve_weights(root)
    assert paths.vae == root / "sd-vae-ft-mse.safetensors"
    assert paths.unet_config == root / "latentsync_unet.yaml"


def test_tiny_checkpoint_dir_resolves_offline(tmp_path, monkeypatch):
    from latentsync.models.tiny import write_tiny_checkpoint_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = write_tiny_checkpoint_dir(tmp_path / "tiny")
    paths = W.resolve_weights(root, include_syncnet=True)
    assert paths.unet_config == root / "latentsync_unet.yaml"
    assert paths.vae == root / "sd-vae-ft-mse" and paths.syncnet == root / "stable_syncnet.pt"


def test_offline_lists_every_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "empty"
    with pytest.raises(MissingWeightsError) as info:
        W.resolve_weights(root, resolution=512)
    msg = str(info.value)
    assert "HF_HUB_OFFLINE" in msg
    for target, url in [
        (root / "latentsync_unet.pt", "https://huggingface.co/ByteDance/LatentSync-1.6/resolve/main/latentsync_unet.pt"),
        (root / "whisper" / "tiny.pt", "https://huggingface.co/ByteDance/LatentSync-1.6/resolve/main/whisper/tiny.pt"),
        (root / "sd-vae-ft-mse" / "config.json", "https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/config.json"),
        (
            root / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors",
            "https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/diffusion_pytorch_model.safetensors",
        ),
    ]:
        assert f"{target}  <-  {url}" in msg
    assert not root.exists()  # nothing created offline


def test_download_disabled_names_only_missing_files(tmp_path):
    root = _fake_official_dir(tmp_path / "ckpt")
    (root / "whisper" / "tiny.pt").unlink()
    with pytest.raises(MissingWeightsError, match="downloads disabled") as info:
        W.resolve_weights(root, resolution=256, download=False)
    msg = str(info.value)
    assert "ByteDance/LatentSync-1.5/resolve/main/whisper/tiny.pt" in msg
    assert "latentsync_unet.pt  <-" not in msg and "sd-vae-ft-mse" not in msg.split("\n", 1)[1].split("(or")[0]


@pytest.mark.parametrize("resolution, repo", [(512, "ByteDance/LatentSync-1.6"), (256, "ByteDance/LatentSync-1.5")])
def test_missing_files_are_downloaded_into_the_folder(tmp_path, monkeypatch, resolution, repo):
    calls = []

    def fake_download(repo_id, filename, local_dir):
        calls.append((repo_id, filename, Path(local_dir)))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
        return str(target)

    monkeypatch.setattr(W, "_hf_hub_download", fake_download)
    root = tmp_path / "ckpt"
    paths = W.resolve_weights(root, resolution=resolution, include_syncnet=True)
    assert calls == [
        (repo, "latentsync_unet.pt", root),
        (repo, "whisper/tiny.pt", root),
        (repo, "stable_syncnet.pt", root),
        ("stabilityai/sd-vae-ft-mse", "config.json", root / "sd-vae-ft-mse"),
        ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors", root / "sd-vae-ft-mse"),
    ]
    assert paths.unet.is_file() and paths.whisper.is_file() and paths.vae == root / "sd-vae-ft-mse"
    calls.clear()
    W.resolve_weights(root, resolution=resolution)  # second call: everything present
    assert calls == []


def test_connection_error_becomes_missing_weights_error(tmp_path, monkeypatch):
    root = _fake_official_dir(tmp_path / "ckpt")
    (root / "latentsync_unet.pt").unlink()

    def failing(repo_id, filename, local_dir):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(W, "_hf_hub_download", failing)
    with pytest.raises(MissingWeightsError, match="ConnectionError: Name or service not known") as info:
        W.resolve_weights(root)
    assert f"{root / 'latentsync_unet.pt'}  <-  https://huggingface.co/ByteDance/LatentSync-1.6" in str(info.value)


def test_real_hf_hub_offline_mode_is_reported(tmp_path, monkeypatch):
    """The real huggingface_hub in offline mode raises; that must end as MissingWeightsError."""
    import huggingface_hub

    monkeypatch.undo()  # restore the real _hf_hub_download (autouse guard removed)
    monkeypatch.setattr(W, "hub_offline", lambda: False)  # get past our own early check
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(MissingWeightsError, match="download of ByteDance/LatentSync-1.6/latentsync_unet.pt failed"):
        W.resolve_weights(tmp_path / "ckpt")


def test_bad_resolution():
    with pytest.raises(InvalidInputError, match="256.*512"):
        W.resolve_weights("/nonexistent", resolution=384)
