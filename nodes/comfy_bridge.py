"""The one place where ComfyUI's types and services meet the LatentSync backend.

The node classes in this package only convert and delegate; the conversions and ComfyUI services
they share live here:

* IMAGE (float32 ``[B, H, W, C]`` 0..1) <-> uint8 frames ``[n, H, W, 3]`` in bounded chunks, so that
  a long video is never copied whole;
* AUDIO (``{"waveform": [B, C, T], "sample_rate": int}``, read by key: VideoHelperSuite passes a lazy
  mapping) -> mono float32 16 kHz waveform ``[T]`` as the backend's Whisper features expect;
* :class:`ComfyProgress`, the callback handed to every backend loop over frames or steps: it checks
  ``comfy.model_management.throw_exception_if_processing_interrupted()`` and moves a
  ``comfy.utils.ProgressBar``;
* :class:`ComfyVAE`, ComfyUI's ``VAE`` object seen through the small encode/decode interface the
  backend sampler uses (scaled latents, the 0.18215 factor taken from ``latentsync.vae``);
* :func:`wrap_model` / :func:`load_model`, a ``comfy.model_patcher.ModelPatcher`` around our torch
  modules so that ComfyUI's model management can move them to the GPU and offload them again;
* :func:`register_model_folder` and the file lists of ``models/latentsync``.

ComfyUI modules (``comfy.*``, ``folder_paths``) are imported inside the functions, never at import
time: this module must import under pytest without ComfyUI (tests stub those modules).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterator, Mapping

import numpy as np
import torch

MODEL_FOLDER = "latentsync"
"""``folder_paths`` key and the folder name under ComfyUI's ``models/``."""

WEIGHT_EXTENSIONS = {".pt", ".pth", ".ckpt", ".safetensors", ".bin"}
WHISPER_SUBFOLDER = "whisper"
FRAME_CHUNK = 16
"""Frames converted at once between IMAGE and uint8 (one U-Net chunk, spec 1.10)."""


# ------------------------------------------------------------------------------------------------
# model folder
# ------------------------------------------------------------------------------------------------

def register_model_folder() -> None:
    """Make ``models/latentsync`` a ComfyUI model folder without disturbing a user's settings.

    ``extra_model_paths.yaml`` is read before custom nodes load, so a user's ``latentsync:`` entries
    may already exist (and may be marked default, i.e. first). The default folder is then appended
    behind them, never put in front; a folder already listed is left where it is. An entry created by
    the yaml has no extension filter; it gets the weight-file extensions.
    """
    import folder_paths

    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    entry = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([default], set(WEIGHT_EXTENSIONS))
        return
    paths, extensions = entry
    if default not in paths:
        paths.append(default)
    if isinstance(extensions, set) and not extensions:
        extensions.update(WEIGHT_EXTENSIONS)


def _model_files() -> list[str]:
    import folder_paths

    try:
        return list(folder_paths.get_filename_list(MODEL_FOLDER))
    except KeyError:
        return []


def _is_whisper(name: str) -> bool:
    return name.replace("\\", "/").split("/")[0].lower() == WHISPER_SUBFOLDER


def list_unet_files() -> list[str]:
    """U-Net checkpoints in the ``latentsync`` model folders (relative names, sorted).

    Whisper (``whisper/``), SyncNet (``*syncnet*``) and VAE folders (``*vae*``) are left out.
    """
    out = []
    for name in _model_files():
        low = name.replace("\\", "/").lower()
        if _is_whisper(low) or "syncnet" in low or "vae" in low.rsplit("/", 1)[0]:
            continue
        out.append(name)
    return out


def list_whisper_files() -> list[str]:
    """Whisper checkpoints: files under ``latentsync/whisper/`` (``whisper/tiny.pt``)."""
    return [n for n in _model_files() if _is_whisper(n)]


def model_folders() -> list[str]:
    """The ``latentsync`` model folders in ComfyUI's order (extra_model_paths entries included);
    the face stage looks for ``face_landmarker.task`` there first."""
    import folder_paths

    try:
        return list(folder_paths.get_folder_paths(MODEL_FOLDER))
    except KeyError:
        return []


def full_model_path(name: str) -> str:
    """Absolute path of a file of the ``latentsync`` folders (ValueError naming the folders)."""
    import folder_paths

    path = folder_paths.get_full_path(MODEL_FOLDER, name)
    if path is None:
        raise ValueError(
            f"model file {name!r} not found in the latentsync model folders "
            f"{folder_paths.get_folder_paths(MODEL_FOLDER)}; put it under models/latentsync/"
        )
    return path


# ------------------------------------------------------------------------------------------------
# devices and model management
# ------------------------------------------------------------------------------------------------

def torch_device() -> torch.device:
    """The compute device ComfyUI chose (``--cpu`` -> cpu)."""
    import comfy.model_management as mm

    return mm.get_torch_device()


def inference_dtype(device: torch.device) -> torch.dtype:
    """float16 where ComfyUI would use it for this device (spec 1.3: fp16 on Ampere+), else float32."""
    import comfy.model_management as mm

    if device.type == "cpu":
        return torch.float32
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


class ManagedModule(torch.nn.Module):
    """Container handed to ComfyUI's ``ModelPatcher``.

    The patcher records the current device by assigning ``model.device``; diffusers-style models and
    openai-whisper's ``Whisper`` expose ``device`` as a read-only property, so they are wrapped in a
    plain module that owns them as ``inner`` (moving the container moves them).
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.device = next(inner.parameters()).device


def wrap_model(module: torch.nn.Module) -> Any:
    """A ``comfy.model_patcher.ModelPatcher`` around ``module`` (inside a :class:`ManagedModule`).

    Load device = ComfyUI's torch device, offload device = its U-Net offload device, so
    ``load_models_gpu`` moves the module in before use and ComfyUI can evict it when another model
    needs the memory (the pattern of ComfyUI's own audio/CLIP-vision encoders).
    """
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(
        ManagedModule(module), load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def load_model(patcher: Any) -> torch.nn.Module:
    """Load the patcher's module onto its device through ComfyUI's model management; returns it."""
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    return patcher.model.inner


# ------------------------------------------------------------------------------------------------
# progress + interruption: one callback for every backend loop
# ------------------------------------------------------------------------------------------------

class ComfyProgress:
    """Callback for the backend's loops: interruption check + ComfyUI progress bar.

    The backend calls it once per unit of work (a frame chunk, a denoising step, ...). Accepted call
    forms: ``cb()`` (one more unit), ``cb(n)`` (n units done in total), or ``cb(info)`` where ``info``
    is a mapping or object with ``done``/``total`` (or ``step``/``num_steps``) fields.
    Every call first runs ``throw_exception_if_processing_interrupted()``, so Cancel in the UI stops
    the job within one unit.

    Args:
        total: number of units expected (>= 1; updated when the backend reports another total).
    """

    def __init__(self, total: int):
        import comfy.utils

        self.total = max(1, int(total))
        self.done = 0
        self.bar = comfy.utils.ProgressBar(self.total)

    @staticmethod
    def _field(info: Any, *names: str):
        for n in names:
            if isinstance(info, Mapping) and n in info:
                return info[n]
            if hasattr(info, n):
                return getattr(info, n)
        return None

    def __call__(self, info: Any = None, *_args: Any, **_kwargs: Any) -> None:
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()
        total = None
        if info is None:
            done = self.done + 1
        elif isinstance(info, (int, np.integer)):
            done = int(info)
        else:
            done = self._field(info, "done", "completed")
            total = self._field(info, "total")
            if done is None:
                done = self.done + 1
        if total is not None and int(total) > 0:
            self.total = int(total)
        self.done = min(int(done), self.total)
        self.bar.update_absolute(self.done, self.total)

    def check(self) -> None:
        """Interruption check alone (for loops that report no progress)."""
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()


# ------------------------------------------------------------------------------------------------
# IMAGE <-> uint8 frames
# ------------------------------------------------------------------------------------------------

def check_image(images: Any, name: str = "images") -> torch.Tensor:
    """Validate an IMAGE batch: float ``[B, H, W, C]`` with C in (1, 3, 4) and B >= 1."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"input {name!r}: expected an IMAGE batch [B, H, W, 3], got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"input {name!r}: the IMAGE batch is empty (0 frames)")
    return images


def image_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """IMAGE float ``[n, H, W, C]`` 0..1 -> uint8 ``[n, H, W, 3]`` RGB (rounded, clamped; alpha dropped)."""
    x = images
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    elif x.shape[-1] == 4:
        x = x[..., :3]
    return (x.float().clamp(0, 1) * 255.0).round_().to(torch.uint8)


def uint8_to_image(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> IMAGE float32 ``[n, H, W, 3]`` 0..1 on the CPU."""
    t = torch.as_tensor(frames)
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got {t.dtype}")
    return t.to("cpu", torch.float32).div_(255.0)


def iter_uint8_chunks(images: torch.Tensor, chunk: int = FRAME_CHUNK, indices=None) -> Iterator[torch.Tensor]:
    """Yield uint8 chunks of an IMAGE batch (or of ``images[indices]``) without a whole-video copy."""
    n = images.shape[0] if indices is None else len(indices)
    for s in range(0, n, chunk):
        part = images[s:s + chunk] if indices is None else images[torch.as_tensor(indices[s:s + chunk])]
        yield image_to_uint8(part)


# ------------------------------------------------------------------------------------------------
# AUDIO -> mono 16 kHz
# ------------------------------------------------------------------------------------------------

WHISPER_SAMPLE_RATE = 16000


def audio_to_mono_16k(audio: Any) -> np.ndarray:
    """ComfyUI AUDIO -> mono float32 waveform ``[T]`` at 16 kHz (spec 1.4 step 1).

    The first item of the batch is used; downmix and resampling are the backend's
    ``latentsync.video.io.resample_audio`` (the same libswresample path as the CLI's ``read_audio``).
    Mono 16 kHz input is passed through unchanged.

    Raises:
        ValueError: no audio, a waveform that is not ``[B, C, T]``/``[C, T]``, or 0 samples.
    """
    from latentsync.video.io import resample_audio

    if audio is None:
        raise ValueError("input 'audio' is None (the source may have no audio track)")
    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (KeyError, TypeError):
        raise ValueError("input 'audio': expected an AUDIO mapping with 'waveform' and 'sample_rate'") from None
    w = torch.as_tensor(waveform)
    if w.ndim == 3:
        w = w[0]
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[-1] == 0:
        raise ValueError(f"input 'audio': expected a waveform [B, C, T] with T > 0, got {tuple(torch.as_tensor(waveform).shape)}")
    return resample_audio(w.detach().to("cpu", torch.float32).numpy(), rate, WHISPER_SAMPLE_RATE)


# ------------------------------------------------------------------------------------------------
# ComfyUI's VAE seen by the backend
# ------------------------------------------------------------------------------------------------

class ComfyVAE:
    """ComfyUI's ``VAE`` (VAELoader, sd-vae-ft-mse) seen through the diffusers ``AutoencoderKL``
    interface that ``latentsync.vae.encode_frames`` / ``decode_latents`` use.

    ComfyUI's ``VAE.encode`` takes IMAGE-layout pixels 0..1 and returns the **unscaled posterior mean**
    (``DiagonalGaussianRegularizer(sample=False)`` -> ``mode()``); ``VAE.decode`` takes unscaled latents
    and returns IMAGE-layout pixels 0..1 (clamped). Here ``encode(x)`` takes diffusers-layout pixels
    ``[N, 3, H, W]`` in -1..1 and returns ``.latent_dist`` with ``mean`` = that posterior mean and
    ``std`` = 0; ``decode(z)`` returns ``.sample`` ``[N, 3, H, W]`` in -1..1. The backend then applies the
    0.18215 factor itself (the only place that knows it) and still draws its posterior noise from the
    seeded generator, so the random stream is the same as on the CLI path; only the sample collapses to
    the mean (the official code uses a sample; the posterior std of sd-vae-ft-mse is tiny, see
    docs/comfyui.md). Devices and batching of the real VAE stay ComfyUI's business (it loads the VAE
    through model management and returns CPU tensors), so ``device`` is the CPU and ``dtype`` float32.
    """

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, vae: Any):
        if vae is None or not hasattr(vae, "encode") or not hasattr(vae, "decode"):
            raise ValueError(f"input 'vae': expected a VAE from a VAELoader node, got {type(vae).__name__}")
        channels = int(getattr(vae, "latent_channels", 4))
        if channels != 4:
            raise ValueError(
                f"input 'vae': LatentSync needs the 4-channel SD VAE (sd-vae-ft-mse), "
                f"got a VAE with {channels} latent channels"
            )
        self.vae = vae
        self.config = SimpleNamespace(latent_channels=4, scaling_factor=vae_scaling_factor())

    def encode(self, pixels: torch.Tensor) -> SimpleNamespace:
        """pixels float ``[N, 3, H, W]`` -1..1 -> ``.latent_dist`` (unscaled mean ``[N, 4, H/8, W/8]``, std 0)."""
        x = pixels.detach().to("cpu", torch.float32).add(1.0).mul_(0.5).clamp_(0, 1).movedim(1, -1)
        mean = self.vae.encode(x).to("cpu", torch.float32)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=torch.zeros_like(mean)))

    def decode(self, latents: torch.Tensor) -> SimpleNamespace:
        """unscaled latents ``[N, 4, h, w]`` -> ``.sample`` float32 ``[N, 3, 8h, 8w]`` -1..1 (CPU)."""
        img = self.vae.decode(latents.detach().to("cpu", torch.float32))
        return SimpleNamespace(sample=img.to("cpu", torch.float32).movedim(-1, 1).mul(2.0).sub_(1.0))


def vae_scaling_factor() -> float:
    """0.18215, from the backend (the factor is defined in ``latentsync.vae`` only)."""
    try:
        from latentsync.vae import VAE_SCALING_FACTOR
    except ImportError:  # backend module not there yet (development); same constant
        return 0.18215
    return float(VAE_SCALING_FACTOR)


@dataclass
class LatentSyncModel:
    """Value of the ``LATENTSYNC_MODEL`` socket: the U-Net under ComfyUI model management.

    Attributes:
        patcher: ``ModelPatcher`` around ``UNet3DConditionModel``.
        config: the resolved U-Net config (official YAML ``model:`` keys).
        resolution: face crop size R the model was trained for (256 for 1.5, 512 for 1.6).
        name: checkpoint file name (for messages).
    """

    patcher: Any
    config: dict
    resolution: int
    name: str


@dataclass
class WhisperModel:
    """Value of the ``LATENTSYNC_WHISPER`` socket: openai-whisper model under model management."""

    patcher: Any
    name: str


def unet_resolution_for(path: str, version: str) -> int:
    """Face-crop resolution R for a U-Net file and the loader's version choice (see loaders.VERSIONS).

    Raises:
        ValueError: an unknown version string.
    """
    if version.startswith("1.6"):
        return 512
    if version.startswith("1.5"):
        return 256
    if version != "auto":
        raise ValueError(f"input 'version': expected one of auto, 1.6 (512), 1.5 (256), got {version!r}")
    name = os.path.basename(path).lower()
    if "1.5" in name or "1_5" in name or "256" in name:
        return 256
    try:  # a checkpoint with a config beside it (tiny test models) states its resolution
        from latentsync.checkpoints import config_next_to
    except ImportError:
        return 512
    from latentsync.config import load_config

    marker = config_next_to(path)
    cfg = load_config(marker) if marker is not None else {}
    found = (cfg.get("data") or {}).get("resolution")
    return int(found) if found else 512


def accepts_callback(fn: Any) -> bool:
    """Whether a backend function takes a ``callback`` keyword."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "callback" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def call_with_progress(fn: Any, *args: Any, total: int = 1, **kwargs: Any) -> Any:
    """Call a backend function with a :class:`ComfyProgress` callback (if it takes one).

    Interruption is checked before the call, inside it at every callback, and after it; the bar is
    completed at the end.
    """
    progress = ComfyProgress(total)
    progress.check()
    if accepts_callback(fn):
        kwargs["callback"] = progress
    result = fn(*args, **kwargs)
    progress.check()
    progress.bar.update_absolute(progress.total, progress.total)
    return result


# ------------------------------------------------------------------------------------------------
# faces: chunked align / paste-back over an IMAGE batch
# ------------------------------------------------------------------------------------------------

def align_faces(images: torch.Tensor, resolution: int) -> Any:
    """Align every frame of an IMAGE batch, FRAME_CHUNK frames at a time (spec 1.7).

    One ``FaceAligner`` sees the chunks in order (its tracking/smoothing state carries over), the
    progress bar moves per chunk and Cancel is honoured between chunks.

    Returns:
        ``latentsync.types.FaceCrops`` for all N frames.

    Raises:
        NoFaceError: no frame has a face.
    """
    from latentsync.face.aligner import FaceAligner, require_face
    from latentsync.types import FaceCrops

    n = images.shape[0]
    progress = ComfyProgress(n)
    aligner = FaceAligner(resolution=resolution, search_dirs=model_folders())
    parts = []
    for start, frames in zip(range(0, n, FRAME_CHUNK), iter_uint8_chunks(images)):
        progress.check()
        parts.append(aligner.align(frames, start_index=start))
        progress(start + frames.shape[0])
    crops = FaceCrops.concat(parts)
    require_face(crops, "input 'images'")
    return crops


def paste_faces(images: torch.Tensor, faces: torch.Tensor, crops: Any) -> torch.Tensor:
    """Paste generated faces into the frames they came from (spec 1.12), chunk by chunk.

    Output frame ``j`` is source frame ``loop_indices(N, F)[j]`` (ping-pong when F > N, a cut when
    F < N) with face ``j`` pasted; frames without a face are copied unchanged. One IMAGE of
    ``[F, H, W, 3]`` is allocated; only a chunk of uint8 frames exists besides it.

    Raises:
        ValueError: ``crops`` belongs to frames of another size or count, or faces are not R x R.
    """
    from latentsync.face.paste import paste_back
    from latentsync.pipeline.faces import composite_faces
    from latentsync.video.timeline import loop_indices

    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    f = faces.shape[0]
    if len(crops) != n or tuple(crops.frame_size) != (h, w):
        raise ValueError(
            f"input 'face_crops' was made from {len(crops)} frames of {tuple(crops.frame_size)} "
            f"(H, W) but input 'images' has {n} frames of {(h, w)}; connect the same IMAGE to both nodes"
        )
    r = int(crops.resolution)
    if tuple(faces.shape[1:3]) != (r, r):
        raise ValueError(f"input 'faces': expected {r}x{r} faces, got {tuple(faces.shape[1:3])}")
    idx = loop_indices(n, f)
    out = torch.empty((f, h, w, 3), dtype=torch.float32)
    progress = ComfyProgress(f)
    for s in range(0, f, FRAME_CHUNK):
        progress.check()
        sel = idx[s:s + FRAME_CHUNK]
        frames = image_to_uint8(images[torch.as_tensor(sel)])
        part = crops.select(sel)
        blended = composite_faces(faces[s:s + FRAME_CHUNK], part.faces, part.mask)
        pasted = paste_back(frames, blended, part)
        out[s:s + len(sel)] = uint8_to_image(pasted)
        progress(s + len(sel))
    return out


def decode_frames(vae: Any, latent: Any, batch_size: int) -> torch.Tensor:
    """LATENT ``{"samples": [F, 4, h, w]}`` (unscaled) -> IMAGE ``[F, 8h, 8w, 3]`` via ComfyUI's VAE.

    ``batch_size`` frames per ``VAE.decode`` call; interruption and progress between calls.

    Raises:
        ValueError: not a LATENT with 4-channel 4-D samples.
    """
    ComfyVAE(vae)  # validates the VAE kind
    samples = latent["samples"] if isinstance(latent, Mapping) or hasattr(latent, "__getitem__") else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 4:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"input 'latent': expected samples [F, 4, h, w], got {shape}")
    f = samples.shape[0]
    progress = ComfyProgress(f)
    out = None
    for s in range(0, f, batch_size):
        progress.check()
        img = vae.decode(samples[s:s + batch_size]).to("cpu", torch.float32)
        if out is None:
            out = torch.empty((f,) + tuple(img.shape[1:]), dtype=torch.float32)
        out[s:s + img.shape[0]] = img
        progress(s + img.shape[0])
    return out


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------

def sample_latents(model: LatentSyncModel, vae: Any, crops: Any, audio_embeds: Any, *, seed: int,
                   steps: int, guidance_scale: float, deepcache: bool) -> torch.Tensor:
    """Run the backend's chunked sampler and return LATENT samples (unscaled) ``[F, 4, R/8, R/8]``.

    F = number of audio windows; face crops are looped/cut to F with the official ping-pong rule.

    Raises:
        ValueError: face crops of another resolution than the model's.
    """
    from latentsync.pipeline.faces import sample_face_latents
    from latentsync.video.timeline import loop_indices

    if int(crops.resolution) != int(model.resolution):
        raise ValueError(
            f"input 'face_crops' are {crops.resolution}x{crops.resolution} but the model "
            f"{model.name!r} works on {model.resolution}x{model.resolution} faces; set the resolution "
            f"of 'LatentSync Face Crop & Align' to {model.resolution}"
        )
    n_out = len(audio_embeds)
    looped = crops.select(loop_indices(len(crops), n_out))
    unet = load_model(model.patcher)
    device = model.patcher.load_device
    chunks = -(-n_out // 16)
    progress = ComfyProgress(chunks * int(steps))
    progress.check()

    def on_step(info: Any) -> None:
        progress(getattr(info, "chunk_index", 0) * int(steps) + getattr(info, "step_index", 0) + 1)

    latents = sample_face_latents(
        unet, ComfyVAE(vae), looped.faces, looped.mask, audio_embeds.embeds, num_inference_steps=int(steps),
        guidance_scale=float(guidance_scale), seed=int(seed), deepcache=bool(deepcache),
        device=device, dtype=next(unet.parameters()).dtype, callback=on_step,
    )
    progress.check()
    return latents.detach().to("cpu", torch.float32) / vae_scaling_factor()
