"""Unit tests of the ComfyUI node adapters (nodes/, __init__.py) without ComfyUI.

ComfyUI's modules are replaced by small stand-ins (``comfy_api.latest`` V3 schema classes,
``comfy.utils.ProgressBar``, ``comfy.model_management``, ``comfy.model_patcher``, ``folder_paths``)
that record what the nodes ask of them. The real server is exercised in test_comfyui_e2e.py.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# stand-ins for ComfyUI
# ------------------------------------------------------------------------------------------------


class _Rec:
    """Records constructor arguments (an Input/Output/Schema stand-in)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.id = args[0] if args else kwargs.get("id")

    def __getattr__(self, name):
        try:
            return self.__dict__["kwargs"][name]
        except KeyError:
            raise AttributeError(name) from None


def _comfy_type(io_type: str, widget: bool = False):
    class T:
        pass

    T.io_type = io_type
    T.Input = type(f"{io_type}Input", (_Rec,), {"io_type": io_type, "widget": widget})
    T.Output = type(f"{io_type}Output", (_Rec,), {"io_type": io_type})
    return T


class _NodeOutput:
    def __init__(self, *args, ui=None):
        self.args = args


class _ComfyNode:
    pass


class _ProgressBar:
    instances: list = []

    def __init__(self, total, node_id=None):
        self.total, self.current, self.updates = total, 0, []
        _ProgressBar.instances.append(self)

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.updates.append(self.current)


class _Interrupted(Exception):
    pass


class _ModelPatcher:
    def __init__(self, model, load_device, offload_device):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device


class FakeVideo:
    """``comfy_api`` ``VideoFromFile`` stand-in: a stream source, its size, an optional trim window
    (ComfyUI >= 0.3.7x) and an optional crop (reported by ``get_dimensions`` as ComfyUI does)."""

    def __init__(self, source, trim=None, crop_size=None):
        self.source, self.crop_size = source, crop_size
        if trim is not None:
            self.get_active_trim_window = lambda: trim

    def get_stream_source(self):
        return self.source

    def get_dimensions(self):
        if self.crop_size is not None:
            return self.crop_size
        import av

        if hasattr(self.source, "seek"):
            self.source.seek(0)
        with av.open(self.source) as c:
            return c.streams.video[0].width, c.streams.video[0].height


def _install_stubs() -> types.SimpleNamespace:
    io = types.ModuleType("comfy_api.latest.io")
    for name, t, w in [("Image", "IMAGE", False), ("Mask", "MASK", False), ("Latent", "LATENT", False),
                       ("Audio", "AUDIO", False), ("Vae", "VAE", False), ("Int", "INT", True),
                       ("Float", "FLOAT", True), ("Boolean", "BOOLEAN", True), ("String", "STRING", True),
                       ("Combo", "COMBO", True), ("Video", "VIDEO", False),
                       ("MultiType", "COMFY_MULTITYPED_V3", False)]:
        setattr(io, name, _comfy_type(t, w))
    io.Custom = lambda io_type: _comfy_type(io_type)
    io.Schema, io.NodeOutput, io.ComfyNode = _Rec, _NodeOutput, _ComfyNode
    latest = types.ModuleType("comfy_api.latest")
    latest.io = io
    latest.InputImpl = types.SimpleNamespace(VideoFromFile=FakeVideo)
    latest.ComfyExtension = type("ComfyExtension", (), {})
    api = types.ModuleType("comfy_api")
    api.latest = latest

    state = types.SimpleNamespace(interrupt=False, interrupt_in=None, loaded=[], folders={}, temp=None)
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = _ProgressBar
    mm = types.ModuleType("comfy.model_management")

    def throw():
        if state.interrupt_in is not None:  # Cancel pressed after that many more checks
            state.interrupt_in -= 1
            state.interrupt = state.interrupt_in < 0
        if state.interrupt:
            state.interrupt, state.interrupt_in = False, None
            raise _Interrupted("interrupted")

    mm.throw_exception_if_processing_interrupted = throw
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.should_use_fp16 = lambda device=None: False
    mm.load_models_gpu = lambda models, **kw: state.loaded.extend(models)
    patcher = types.ModuleType("comfy.model_patcher")
    patcher.ModelPatcher = _ModelPatcher
    comfy = types.ModuleType("comfy")
    comfy.utils, comfy.model_management, comfy.model_patcher = utils, mm, patcher

    fp = types.ModuleType("folder_paths")
    fp.models_dir = "/nonexistent/ComfyUI/models"
    fp.folder_names_and_paths = state.folders

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths[name]
        out = set()
        for base in paths:
            for p in Path(base).rglob("*") if Path(base).is_dir() else []:
                if p.is_file() and (not exts or p.suffix.lower() in exts):
                    out.add(p.relative_to(base).as_posix())
        return sorted(out)

    def get_full_path(name, filename):
        for base in fp.folder_names_and_paths[name][0]:
            p = Path(base) / filename
            if p.is_file():
                return str(p)
        return None

    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_temp_directory = lambda: state.temp

    sys.modules.update({
        "comfy_api": api, "comfy_api.latest": latest, "comfy": comfy, "comfy.utils": utils,
        "comfy.model_management": mm, "comfy.model_patcher": patcher, "folder_paths": fp,
    })
    return state


STATE = _install_stubs()

import nodes  # noqa: E402  (the pack's node package, imported with the stand-ins in place)
from nodes import comfy_convert as convert  # noqa: E402
from nodes import comfy_models as models  # noqa: E402
from nodes.comfy_progress import ComfyProgress  # noqa: E402
from nodes.comfy_vae import ComfyVAE  # noqa: E402
from latentsync.errors import InvalidInputError  # noqa: E402
from latentsync.types import AudioEmbeds, FaceCrops  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_state(tmp_path):
    STATE.interrupt, STATE.interrupt_in = False, None
    STATE.temp = str(tmp_path / "comfy_temp")
    STATE.loaded.clear()
    STATE.folders.clear()
    _ProgressBar.instances.clear()
    yield


def _run(node, **kwargs):
    return node.execute(**kwargs).args


# ------------------------------------------------------------------------------------------------
# package entry points and schemas
# ------------------------------------------------------------------------------------------------

EXPECTED_IDS = {
    "LatentSyncUNetLoader", "LatentSyncWhisperLoader", "LatentSyncLoadWhisperAudio",
    "LatentSyncFaceCropAlign", "LatentSyncSampler", "LatentSyncVAEDecodeFrames", "LatentSyncPasteBackFaces",
}


def test_extension_lists_every_node_and_registers_the_model_folder():
    import asyncio

    ext = asyncio.run(nodes.comfy_entrypoint())
    node_list = asyncio.run(ext.get_node_list())
    ids = {n.define_schema().node_id for n in node_list}
    assert ids == EXPECTED_IDS
    assert "latentsync" in STATE.folders


@pytest.mark.parametrize("node", nodes.NODES, ids=lambda n: n.__name__)
def test_schema_is_typed_categorised_and_explained(node):
    STATE.folders["latentsync"] = ([], set())
    schema = node.define_schema()
    assert schema.node_id.startswith("LatentSync") and schema.category == "LatentSync"
    assert len(schema.description) > 30
    for inp in schema.inputs:
        assert inp.kwargs.get("tooltip"), f"{schema.node_id}.{inp.id} has no tooltip"
    for out in schema.outputs:
        assert out.kwargs.get("tooltip") and out.kwargs.get("display_name")
    for inp in schema.inputs:  # bounded numbers
        if inp.io_type in ("INT", "FLOAT"):
            assert "min" in inp.kwargs and "max" in inp.kwargs, f"{schema.node_id}.{inp.id}"


def test_top_level_init_imports_outside_comfyui_without_heavy_modules(tmp_path):
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(REPO_ROOT / '__init__.py')!r},"
        f" submodule_search_locations=[{str(REPO_ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        "heavy = [n for n in ('torch', 'diffusers', 'mediapipe', 'whisper', 'torchvision', 'torchaudio', 'nodes')"
        " if n in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_node_modules_do_not_import_the_backend_or_torchvision_at_import_time():
    for path in [REPO_ROOT / "__init__.py", *sorted((REPO_ROOT / "nodes").glob("*.py"))]:
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(torchvision|torchaudio)\b", text, re.M), path
        top = [ln for ln in text.splitlines() if re.match(r"(import|from) ", ln)]
        assert not any("latentsync" in ln or "diffusers" in ln or "mediapipe" in ln for ln in top), (path, top)
        assert "pip" not in " ".join(top)


# ------------------------------------------------------------------------------------------------
# model folder
# ------------------------------------------------------------------------------------------------

def test_model_folder_keeps_user_paths_first_and_adds_default_once(tmp_path):
    user = str(tmp_path / "mine")
    STATE.folders["latentsync"] = ([user], set())  # what extra_model_paths.yaml created
    models.register_model_folder()
    models.register_model_folder()
    paths, exts = STATE.folders["latentsync"]
    assert paths[0] == user and paths.count("/nonexistent/ComfyUI/models/latentsync") == 1
    assert ".pt" in exts and ".safetensors" in exts and ".yaml" not in exts


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from latentsync.models.tiny import write_tiny_unet_checkpoint, write_tiny_whisper_checkpoint

    d = tmp_path_factory.mktemp("ckpt")  # the official layout, the parts the nodes load
    write_tiny_unet_checkpoint(d / "latentsync_unet.pt")
    write_tiny_whisper_checkpoint(d / "whisper" / "tiny.pt")
    (d / "stable_syncnet.pt").write_bytes(b"")  # listed by neither loader
    (d / "sd-vae-ft-mse").mkdir()
    (d / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return d


def test_file_lists_split_unet_and_whisper(tiny_dir):
    STATE.folders["latentsync"] = ([str(tiny_dir)], set(models.WEIGHT_EXTENSIONS))
    assert models.list_unet_files() == ["latentsync_unet.pt"]
    assert models.list_whisper_files() == ["whisper/tiny.pt"]
    with pytest.raises(ValueError, match="not found in the latentsync model folders"):
        models.full_model_path("nope.pt")


def test_file_lists_take_renamed_and_repacked_files(tmp_path):
    from safetensors.torch import save_file

    names = ["LatentSync-1.5/unet_fp16.safetensors", "latentsync_unet.pt", "unet.ckpt", "unet.pth", "unet.bin",
             "whisper-tiny.pt", "tiny.pt", "whisper/tiny.pt", "stable_syncnet.pt", "sd-vae-ft-mse.safetensors",
             "sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "notes.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / name))
    STATE.folders["latentsync"] = ([str(tmp_path)], set(models.WEIGHT_EXTENSIONS))
    assert models.list_unet_files() == ["LatentSync-1.5/unet_fp16.safetensors", "latentsync_unet.pt", "unet.bin",
                                        "unet.ckpt", "unet.pth"]
    assert models.list_whisper_files() == ["tiny.pt", "whisper-tiny.pt", "whisper/tiny.pt"]
    # version auto: the folder names 1.5; a file stating nothing is taken as 1.6 unless its metadata says 1.5
    assert models.unet_resolution_for(models.full_model_path("LatentSync-1.5/unet_fp16.safetensors"), "auto") == 256
    assert models.unet_resolution_for(models.full_model_path("unet.bin"), "auto") == 512
    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "unet.bin"), metadata={"modelspec.resolution": "256x256"})
    assert models.unet_resolution_for(models.full_model_path("unet.bin"), "auto") == 256


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    from nodes.loaders import UNetLoader

    STATE.folders["latentsync"] = ([str(tiny_dir)], set(models.WEIGHT_EXTENSIONS))
    (model,) = _run(UNetLoader, unet_name="latentsync_unet.pt", version="auto")
    return model


def test_unet_loader_wraps_model_for_model_management_and_detects_resolution(tiny_dir, tiny_model):
    model = tiny_model
    assert isinstance(model.patcher, _ModelPatcher) and model.patcher.load_device == torch.device("cpu")
    assert model.resolution == 256  # from the tiny marker (data.resolution)
    assert models.unet_resolution_for(str(tiny_dir / "latentsync_unet.pt"), "1.6 (512)") == 512
    assert models.unet_resolution_for("/x/latentsync_1.5_unet.pt", "auto") == 256
    assert models.unet_resolution_for("/x/other.pt", "1.5 (256)") == 256


# ------------------------------------------------------------------------------------------------
# conversions
# ------------------------------------------------------------------------------------------------

def test_image_uint8_round_trip_is_exact_and_alpha_is_dropped():
    u8 = torch.randint(0, 256, (5, 7, 9, 3), dtype=torch.uint8)
    img = convert.uint8_to_image(u8)
    assert img.dtype == torch.float32 and float(img.max()) <= 1.0
    assert torch.equal(convert.image_to_uint8(img), u8)
    rgba = torch.cat([img, torch.ones_like(img[..., :1])], -1)
    assert torch.equal(convert.image_to_uint8(rgba), u8)
    chunks = list(convert.iter_uint8_chunks(img, chunk=2))
    assert [c.shape[0] for c in chunks] == [2, 2, 1] and torch.equal(torch.cat(chunks), u8)
    with pytest.raises(ValueError, match="expected an IMAGE batch"):
        convert.check_image(torch.zeros(3, 4, 5))


def test_audio_mono_16k_passthrough_and_resample_match_the_cli_reader(tmp_path):
    import soundfile as sf

    from latentsync.video.io import read_audio

    t = np.arange(44100) / 44100.0
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)
    mono16 = (np.round(np.sin(np.arange(16000) / 7.0) * 8000) / 32768).astype(np.float32)
    out = convert.audio_to_mono_16k({"waveform": torch.from_numpy(mono16)[None, None], "sample_rate": 16000})
    np.testing.assert_array_equal(out, mono16)

    got = convert.audio_to_mono_16k({"waveform": torch.from_numpy(stereo)[None], "sample_rate": 44100})
    sf.write(tmp_path / "a.wav", stereo.T, 44100, subtype="FLOAT")
    ref = read_audio(tmp_path / "a.wav", 16000)
    assert abs(len(got) - 16000) <= 32 and abs(len(ref) - len(got)) <= 32
    n = min(len(got), len(ref))
    assert np.abs(got[:n] - ref[:n]).max() < 2e-3
    with pytest.raises(ValueError, match="audio"):
        convert.audio_to_mono_16k(None)


class _Lazy:
    """VideoHelperSuite passes AUDIO as a lazy Mapping-like object: only key access works."""

    def __init__(self, d):
        self._d = d

    def __getitem__(self, k):
        return self._d[k]


def test_audio_is_read_by_key_not_by_isinstance_dict():
    w = torch.zeros(1, 1, 1600)
    assert convert.audio_to_mono_16k(_Lazy({"waveform": w, "sample_rate": 16000})).shape == (1600,)


# ------------------------------------------------------------------------------------------------
# progress and interruption
# ------------------------------------------------------------------------------------------------

def test_progress_callback_moves_the_bar_and_raises_on_interrupt():
    from latentsync.pipeline.stages import Progress

    p = ComfyProgress()
    p(Progress("align", 1, 4))
    p()
    p(Progress("denoise", 3, 8))
    assert p.bar.updates == [1, 3] and p.bar.total == 8
    STATE.interrupt = True
    with pytest.raises(_Interrupted):
        p()


# ------------------------------------------------------------------------------------------------
# VAE adapter
# ------------------------------------------------------------------------------------------------

class FakeComfyVAE:
    """ComfyUI VAE semantics around a diffusers AutoencoderKL: encode(IMAGE 0..1) -> unscaled mean,
    decode(unscaled) -> IMAGE 0..1 clamped."""

    latent_channels = 4

    def __init__(self, ae):
        self.ae, self.calls = ae, []

    @torch.no_grad()
    def encode(self, pixels):
        self.calls.append(("encode", pixels.shape[0]))
        return self.ae.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mean

    @torch.no_grad()
    def decode(self, z):
        self.calls.append(("decode", z.shape[0]))
        return ((self.ae.decode(z).sample + 1) / 2).clamp(0, 1).movedim(1, -1)


@pytest.fixture(scope="module")
def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, norm_num_groups=4,
                         latent_channels=4).eval()


def test_comfy_vae_gives_backend_the_scaled_posterior_mean(tiny_vae):
    from latentsync.vae import VAE_SCALING_FACTOR, encode_frames

    x = torch.rand(3, 3, 64, 64) * 2 - 1
    adapter = ComfyVAE(FakeComfyVAE(tiny_vae))
    z = encode_frames(adapter, x, torch.Generator().manual_seed(0), batch_size=2)
    with torch.no_grad():
        want = tiny_vae.encode(x).latent_dist.mean * VAE_SCALING_FACTOR
    torch.testing.assert_close(z, want, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="4-channel"):
        ComfyVAE(types.SimpleNamespace(encode=1, decode=1, latent_channels=16))


def test_vae_decode_frames_decodes_in_chunks_with_progress(tiny_vae):
    from nodes.vae import VAEDecodeFrames

    vae = FakeComfyVAE(tiny_vae)
    z = torch.randn(5, 4, 8, 8)
    (faces,) = _run(VAEDecodeFrames, vae=vae, latent={"samples": z}, batch_size=2)
    assert faces.shape == (5, 64, 64, 3)
    assert [c for c in vae.calls if c[0] == "decode"] == [("decode", 2), ("decode", 2), ("decode", 1)]
    torch.testing.assert_close(faces, vae.decode(z))
    assert _ProgressBar.instances[-1].updates[-1] == 5
    STATE.interrupt = True
    with pytest.raises(_Interrupted):
        _run(VAEDecodeFrames, vae=vae, latent={"samples": z}, batch_size=2)


# ------------------------------------------------------------------------------------------------
# faces: align (chunked, no-face frames, NoFaceError) and paste-back (loop, passthrough)
# ------------------------------------------------------------------------------------------------

R = 64


def _crops(n, no_face=(), h=40, w=48):
    faces = torch.full((n, R, R, 3), 127, dtype=torch.uint8)
    return FaceCrops(faces=faces, affine_matrices=torch.zeros(n, 2, 3), crop_size=(R, R),
                     mask=torch.ones(R, R), frame_size=(h, w), resolution=R, no_face_indices=list(no_face))


class FakeAligner:
    """Marks frames whose mean is below 0.1 as face-less; records the chunks it saw."""

    seen: list = []

    def __init__(self, resolution=256, **kw):
        from latentsync.face.speaker import parse_face_choice

        self.resolution = resolution
        self.face = parse_face_choice(kw.get("face", "largest"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def align(self, frames, start_index=0):
        FakeAligner.seen.append((start_index, frames.shape[0], frames.dtype))
        n = frames.shape[0]
        dark = [start_index + i for i in range(n) if torch.as_tensor(frames[i]).float().mean() < 25]
        c = _crops(n, dark, frames.shape[1], frames.shape[2])
        c.affine_matrices[:, 0, 2] = torch.arange(start_index, start_index + n, dtype=torch.float32)
        return c


@pytest.fixture
def fake_face(monkeypatch):
    import latentsync.face.aligner as aligner_mod
    import latentsync.face.paste as paste_mod

    def paste_back(frames, faces, crops, **options):
        assert options.get("mode", "full") in ("full", "mouth")  # the node's paste_mode / colour_match
        assert faces.shape[0] == frames.shape[0] == len(crops)
        out = torch.as_tensor(np.array(frames, copy=True))  # a forward chunk (tensor) or a spilled one (numpy)
        for j in range(frames.shape[0]):
            if crops.start_index + j not in crops.no_face_indices:
                out[j, 0, 0, 0] = int(crops.affine_matrices[j, 0, 2])  # mark: source frame index
        return out

    monkeypatch.setattr(aligner_mod, "FaceAligner", FakeAligner)
    monkeypatch.setattr(paste_mod, "paste_back", paste_back)
    FakeAligner.seen = []


def test_face_crop_align_chunks_frames_and_lists_faceless_ones(fake_face):
    from nodes.face import FaceCropAlign

    images = torch.full((20, 40, 48, 3), 0.5)
    images[[3, 17]] = 0.0
    crops, faces, mask, no_face = _run(FaceCropAlign, images=images, resolution="256")
    assert [(s, n) for s, n, _ in FakeAligner.seen] == [(0, 1), (0, 16), (16, 4)]  # the face probe, then all
    assert all(d == torch.uint8 for _, _, d in FakeAligner.seen)
    assert crops.no_face_indices == [3, 17] and no_face == "3,17" and len(crops) == 20
    assert faces.shape == (20, R, R, 3) and faces.dtype == torch.float32
    assert mask.shape == (1, R, R) and float(mask.max()) == 0.0  # 1 = generated region
    with pytest.raises(Exception, match="no face found in any of its 5 frames"):
        _run(FaceCropAlign, images=torch.zeros(5, 40, 48, 3), resolution="256")


def test_paste_back_loops_frames_ping_pong_and_passes_faceless_frames_unchanged(fake_face):
    from nodes.face import PasteBackFaces

    n, f = 5, 12
    images = torch.rand(n, 40, 48, 3)
    crops = _crops(n, no_face=[2])
    crops.affine_matrices[:, 0, 2] = torch.arange(n, dtype=torch.float32)
    faces = torch.rand(f, R, R, 3)
    out, video = _run(PasteBackFaces, images=images, faces=faces, face_crops=crops)
    assert video is None  # an IMAGE input gives an IMAGE
    assert out.shape == (f, 40, 48, 3) and out.dtype == torch.float32
    src = [0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 1]  # official ping-pong (spec 1.6)
    for j, i in enumerate(src):
        if i == 2:  # no face: the original frame, bit for bit after the uint8 round trip
            assert torch.equal(convert.image_to_uint8(out[j]), convert.image_to_uint8(images[i]))
        else:
            assert round(float(out[j, 0, 0, 0]) * 255) == i
            torch.testing.assert_close(out[j, 1:], convert.uint8_to_image(convert.image_to_uint8(images[i, 1:])))
    cut, _ = _run(PasteBackFaces, images=images, faces=faces[:3], face_crops=crops)
    assert cut.shape[0] == 3
    with pytest.raises(InvalidInputError, match="connect the same frames"):
        _run(PasteBackFaces, images=images[:4], faces=faces, face_crops=crops)


# ------------------------------------------------------------------------------------------------
# sampler (tiny U-Net, tiny VAE behind the ComfyUI adapter)
# ------------------------------------------------------------------------------------------------

def test_sampler_runs_chunks_with_progress_and_returns_unscaled_latents(tiny_model, tiny_vae):
    import dataclasses

    from nodes.sampler import LatentSyncSampler

    model = dataclasses.replace(tiny_model, resolution=64)  # the tiny U-Net takes any multiple of 64 px; keeps the test fast
    crops = _crops(3)
    crops.faces = torch.randint(0, 256, (3, R, R, 3), dtype=torch.uint8)
    embeds = AudioEmbeds(torch.randn(4, 50, 384), 25.0)  # 4 audio frames > 3 video frames: loop
    kwargs = dict(model=model, vae=FakeComfyVAE(tiny_vae), face_crops=crops, audio_embeds=embeds,
                  seed=1, steps=2, guidance_scale=1.5, deepcache=False)
    (latent,) = _run(LatentSyncSampler, **kwargs)
    assert latent["samples"].shape == (4, 4, 8, 8) and torch.isfinite(latent["samples"]).all()
    assert STATE.loaded and STATE.loaded[0] is model.patcher
    assert _ProgressBar.instances[-1].updates == [1, 2]
    (fast,) = _run(LatentSyncSampler, **kwargs, scheduler="dpmsolver++")
    assert fast["samples"].shape == (4, 4, 8, 8) and not torch.allclose(fast["samples"], latent["samples"])
    kwargs.update(steps=1, guidance_scale=1.0)
    STATE.interrupt = True
    with pytest.raises(_Interrupted):
        _run(LatentSyncSampler, **kwargs)
    model.resolution = 256
    with pytest.raises(ValueError, match="set the resolution"):
        _run(LatentSyncSampler, **kwargs)


def test_whisper_audio_node_makes_one_window_per_frame(tiny_dir):
    pytest.importorskip("whisper")
    if importlib.util.find_spec("latentsync.audio.windows") is None:
        pytest.skip("latentsync.audio.windows not written yet")
    from nodes.audio import LoadWhisperAudio
    from nodes.loaders import WhisperLoader

    STATE.folders["latentsync"] = ([str(tiny_dir)], set(models.WEIGHT_EXTENSIONS))
    (whisper,) = _run(WhisperLoader, whisper_name="whisper/tiny.pt")
    audio = {"waveform": torch.randn(1, 2, 44100) * 0.1, "sample_rate": 44100}
    embeds, n = _run(LoadWhisperAudio, audio=audio, whisper=whisper, fps=25.0)
    assert embeds.embeds.shape == (n, 50, 384) and 24 <= n <= 28
    assert STATE.loaded and STATE.loaded[0] is whisper.patcher


def test_composite_keeps_the_reference_outside_the_generated_region():
    gen = torch.full((2, 4, 4, 3), 1.0)
    ref = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    mask = torch.zeros(4, 4)
    mask[:2] = 1.0  # top half kept
    from latentsync.pipeline.faces import composite_faces

    out = composite_faces(gen, ref, mask)
    assert torch.equal(out[:, :2], torch.zeros(2, 2, 4, 3)) and torch.equal(out[:, 2:], torch.ones(2, 2, 4, 3))


def test_select_crops_renumbers_faceless_frames_for_a_loop():
    c = _crops(4, no_face=[1])
    c.affine_matrices[:, 0, 2] = torch.arange(4, dtype=torch.float32)
    sel = c.select(np.array([0, 1, 2, 3, 3, 2, 1]))
    assert sel.no_face_indices == [1, 6] and len(sel) == 7
    assert sel.affine_matrices[:, 0, 2].tolist() == [0, 1, 2, 3, 3, 2, 1]
    joined = FaceCrops.concat([_crops(2, [1]), _crops(3, [2, 4])])
    assert len(joined) == 5 and joined.no_face_indices == [1, 2, 4]


# ------------------------------------------------------------------------------------------------
# VIDEO in, VIDEO out (the streaming path)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """8 frames of the demo1 cut at half size (540x960, 25 fps) and 0.4 s of its speech (12 output
    frames: the video is looped forward/backward)."""
    from latentsync.video.io import VideoWriter, iter_frames, read_audio

    src, wav = REPO_ROOT / "examples" / "demo1_3s.mp4", REPO_ROOT / "examples" / "demo1_3s.wav"
    if not src.is_file():
        pytest.skip("examples/demo1_3s.mp4 not present")
    d = tmp_path_factory.mktemp("clip")
    frames = next(iter_frames(src, chunk_size=8))
    small = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(960, 540),
                                            mode="area").round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    with VideoWriter(d / "clip.mp4", 25, 540, 960, crf=10) as w:
        w.write(small.numpy())
    speech = read_audio(wav, 16000)[:6400]
    import soundfile as sf

    sf.write(d / "speech.wav", speech, 16000, subtype="FLOAT")
    return d / "clip.mp4", d / "speech.wav", speech


class ComfyLikeVAE:
    """The CLI side of the comparison: a diffusers-style VAE computing exactly what ComfyUI's VAE does
    through :class:`ComfyVAE` (posterior mean; decode clamped), so both paths see the same VAE."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, comfy_vae):
        self.adapter = ComfyVAE(comfy_vae)
        self.ae = comfy_vae.ae
        self.config = self.adapter.config

    def encode(self, x):
        return self.adapter.encode(x)

    @torch.no_grad()
    def decode(self, z):
        return types.SimpleNamespace(sample=self.ae.decode(z).sample.clamp(-1, 1))


@pytest.mark.slow  # two tiny-model pipelines with mediapipe: ~1 min unloaded; run by tools/comfyui_harness.sh
def test_video_nodes_give_the_cli_frames(tmp_path, tiny_dir, tiny_model, face_clip):
    """LoadVideo -> Face Crop & Align -> Whisper Audio -> Sampler -> Paste Back (VIDEO + LATENT) gives
    the frames of LipSyncPipeline (the CLI) for the same clip, speech, seed and VAE; fps and audio kept."""
    pytest.importorskip("whisper")
    from latentsync.models.tiny import build_tiny_vae
    from latentsync.pipeline.lipsync import LipSyncPipeline
    from latentsync.video.io import iter_frames, probe_video, read_audio
    from nodes.audio import LoadWhisperAudio
    from nodes.face import FaceCropAlign, PasteBackFaces
    from nodes.loaders import WhisperLoader
    from nodes.sampler import LatentSyncSampler

    video_path, wav, speech = face_clip
    STATE.folders["latentsync"] = ([str(tiny_dir)], set(models.WEIGHT_EXTENSIONS))
    (whisper,) = _run(WhisperLoader, whisper_name="whisper/tiny.pt")
    vae = FakeComfyVAE(build_tiny_vae(0))
    video, audio = FakeVideo(str(video_path)), {"waveform": torch.from_numpy(speech)[None, None], "sample_rate": 16000}

    crops, _, _, _ = _run(FaceCropAlign, images=video, resolution="256")
    embeds, n = _run(LoadWhisperAudio, audio=audio, whisper=whisper, fps=1.0, video=video)
    (latent,) = _run(LatentSyncSampler, model=tiny_model, vae=vae, face_crops=crops, audio_embeds=embeds, seed=7,
                     steps=1, guidance_scale=1.5, deepcache=False)
    images, out = _run(PasteBackFaces, images=video, faces=latent, face_crops=crops, audio=audio, vae=vae)
    assert images is None and n == 12 and len(crops) == 8

    cli = tmp_path / "cli.mp4"
    pipe = LipSyncPipeline(tiny_model.patcher.model.inner, ComfyLikeVAE(vae), whisper.patcher.model.inner,
                           resolution=256, device="cpu")
    pipe(video_path, wav, cli, num_inference_steps=1, guidance_scale=1.5, seed=7)

    got = out.get_stream_source()
    assert Path(got).parent == Path(STATE.temp) and probe_video(got).fps == 25.0
    assert probe_video(got).num_frames == probe_video(cli).num_frames == 12
    a, b = np.concatenate(list(iter_frames(got))), np.concatenate(list(iter_frames(cli)))
    assert np.array_equal(a, b), f"max abs difference {np.abs(a.astype(int) - b).max()}"
    assert len(read_audio(got)) == len(read_audio(cli)) == 6400  # the whole 0.4 s of speech (cut, never padded)
    assert sorted(p.name for p in Path(STATE.temp).iterdir()) == [Path(got).name]  # no scratch left


@pytest.fixture(scope="module")
def counting_video(tmp_path_factory):
    """20 frames 32x48 at 25 fps, frame i filled with grey level 10 * i + 20 (survives H.264); frame 0
    is dark, which FakeAligner takes for a frame without a face."""
    from latentsync.video.io import VideoWriter

    path = tmp_path_factory.mktemp("count") / "count.mp4"
    with VideoWriter(path, 25, 48, 32, crf=0) as w:
        w.write(np.stack([np.full((32, 48, 3), 10 * i + 20, np.uint8) for i in range(20)]))
    return path


def _levels(video) -> list[int]:
    from latentsync.video.io import iter_frames

    return [int(f[16, 24, 0]) for c in iter_frames(video.get_stream_source()) for f in c]


def test_video_input_streams_its_trim_window_and_refuses_a_crop(fake_face, counting_video):
    import io

    from nodes.face import FaceCropAlign, PasteBackFaces

    trimmed = FakeVideo(str(counting_video), trim=(0.2, 0.4))  # frames 5..14 (t = i / 25 in [0.2, 0.6))
    crops, faces, _, _ = _run(FaceCropAlign, images=trimmed, resolution="256")
    assert len(crops) == 10 and [(s, n) for s, n, _ in FakeAligner.seen] == [(0, 1), (0, 10)]  # the face probe, then the window
    images, out = _run(PasteBackFaces, images=trimmed, faces=torch.rand(14, R, R, 3), face_crops=crops,
                       audio={"waveform": torch.zeros(1, 2, 48000), "sample_rate": 48000})
    src = list(range(5, 15)) + [14, 13, 12, 11]  # ping-pong over the trimmed frames
    assert images is None and np.abs(np.array(_levels(out)) - (10 * np.array(src) + 20)).max() <= 3
    from latentsync.video.io import probe_video, read_audio

    assert probe_video(out.get_stream_source()).fps == 25.0
    assert abs(len(read_audio(out.get_stream_source())) - 14 / 25 * 16000) < 400  # cut to 14 frames

    in_memory = FakeVideo(io.BytesIO(Path(counting_video).read_bytes()))  # a stream source that is not a file
    crops2, *_ = _run(FaceCropAlign, images=in_memory, resolution="256")
    assert len(crops2) == 20
    with pytest.raises(ValueError, match="cannot apply a LoadVideo crop"):
        _run(FaceCropAlign, images=FakeVideo(str(counting_video), crop_size=(16, 16)), resolution="256")
    with pytest.raises(Exception, match="holds no frame"):
        _run(FaceCropAlign, images=FakeVideo(str(counting_video), trim=(5.0, 0.0)), resolution="256")


def test_cancel_during_a_video_paste_leaves_no_file(fake_face, counting_video):
    from nodes.face import FaceCropAlign, PasteBackFaces

    video = FakeVideo(str(counting_video))
    crops, *_ = _run(FaceCropAlign, images=video, resolution="256")
    before = sorted(Path(STATE.temp).rglob("*"))
    STATE.interrupt_in = 2  # Cancel while the second output chunk is pasted
    with pytest.raises(_Interrupted):
        _run(PasteBackFaces, images=video, faces=torch.rand(40, R, R, 3), face_crops=crops)
    assert sorted(Path(STATE.temp).rglob("*")) == before  # no partial video, no loop spill
    assert Path(counting_video).stat().st_size > 0


def test_long_video_crops_travel_in_a_temp_file(fake_face, counting_video, monkeypatch):
    import gc

    import latentsync.video.segments as segments
    from nodes.face import FaceCropAlign, PasteBackFaces

    monkeypatch.setattr(segments, "SPILL_BYTES", 2 * R * R * 3)  # spill after 2 frames
    video = FakeVideo(str(counting_video))
    crops, preview, _, no_face = _run(FaceCropAlign, images=video, resolution="256")
    assert isinstance(crops, segments.SpilledFaceCrops) and len(crops) == 20
    files = list(Path(STATE.temp).glob("faces-*.u8"))
    assert len(files) == 1 and files[0].stat().st_size == 20 * R * R * 3
    assert preview.shape == (20, R, R, 3) and no_face == "0"
    sel = crops.select([3, 0, 19])
    assert sel.no_face_indices == [1] and sel.affine_matrices[:, 0, 2].tolist() == [3, 0, 19]
    _, out = _run(PasteBackFaces, images=video, faces=torch.rand(20, R, R, 3), face_crops=crops)
    assert np.abs(np.array(_levels(out)) - (10 * np.arange(20) + 20)).max() <= 3
    del crops, sel
    gc.collect()
    assert not list(Path(STATE.temp).glob("faces-*.u8"))  # removed with the last reference
