"""The whole lip-sync job, streaming: video + speech in, lip-synced video out (spec 1).

Order of work (spec 1.4-1.12, rewritten to stream; memory does not grow with the video length):

1. Check the inputs (paths, output != inputs, numbers), probe the video, read the audio (16 kHz mono).
2. Whisper features of the whole audio (the log-mel normalisation is global, spec 1.4), kept as
   ``[L, 5, 384]``; the per-frame windows are gathered chunk by chunk from an int64 index table.
3. Timeline (:func:`latentsync.video.timeline.plan_output`): one output frame per audio window, at the
   **input's fps** (no 25 fps re-encode). Audio shorter than the video -> the video is cut; audio
   longer -> the video is looped forward / backward (spec 1.6).
4. For each chunk of 16 output frames: decode the frames (PyAV), align the faces (stateful tracker),
   VAE-encode masked and reference faces, DDIM with zero-audio CFG (optionally DeepCache), decode,
   composite in aligned-face space ``out = decoded * (1 - m) + ref * m`` (spec 1.10), paste back,
   encode into the output. Chunks without any face skip the diffusion.
5. The output file appears only when everything succeeded (``VideoWriter`` writes a temporary file
   and renames it); the audio track is the input audio cut to the output's duration.

Looping and memory: the reversed passes of a ping-pong loop need earlier frames again. Instead of
keeping the video in memory or re-decoding backwards (HEVC seeks to a key frame and decodes forward,
quadratic for long GOPs), the first forward pass **spills** every decoded frame and its aligned face to
two raw uint8 files in a temporary folder (removed at the end, also on errors); later passes read
the frames they need back with ordinary file reads (not ``mmap``: read pages stay in the OS page cache
and never count toward the process's resident memory). The per-frame data kept in memory are the
affine matrices (24 bytes), a no-face flag and the audio index table (80 bytes). Disk use when looping:
``n_video * (H * W * 3 + R * R * 3)`` bytes (about 6.4 MB per 1080x1920 frame). Without looping nothing
is spilled. Faces of looped frames are reused from the first pass (as the official code does: it
aligns the video once and loops the aligned faces and matrices).

Frames without a face are passed through unchanged; their output indices are logged and returned in
:class:`LipSyncResult`. A video without any face raises :class:`~latentsync.errors.NoFaceError`
(and no output is written).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from latentsync.errors import AudioTooShortError, InvalidInputError, NoFaceError
from latentsync.pipeline.faces import CHUNK_FRAMES  # official data.num_frames (16); the temporal layers accept 1..24
from latentsync.pipeline.latents import initial_noise
from latentsync.types import FaceCrops

if TYPE_CHECKING:
    from latentsync.pipeline.sampler import StepInfo

# diffusers-based modules (sampler, vae) are imported where used, so that argument and file checks
# (check_job_arguments, load_inputs) answer quickly without importing diffusers.

logger = logging.getLogger(__name__)

SUPPORTED_RESOLUTIONS = (256, 512)
SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------------------------
# Public data
# ---------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What the pipeline reports through ``callback`` (progress bars, logs, interrupts).

    Attributes:
        stage: ``"audio"`` (Whisper features), ``"frames"`` (output frames finished),
            ``"denoise"`` (one DDIM step of one chunk), ``"done"``.
        done, total: counters of the stage (frames, or steps over all chunks).
        step: the sampler's :class:`~latentsync.pipeline.sampler.StepInfo` for ``"denoise"``.
    """

    stage: str
    done: int
    total: int
    step: "StepInfo | None" = None


ProgressCallback = Callable[[Progress], None]


@dataclass
class LipSyncResult:
    """Summary of a finished job.

    Attributes:
        output: path of the written video.
        num_frames: frames written (= audio windows, spec 1.4.7).
        fps: output frame rate (= the input's), Hz.
        width, height: output frame size, pixels (= the input's).
        num_video_frames: frames of the input video.
        looped: the video was played forward/backward to cover the audio.
        num_audio_samples: samples (16 kHz) in the output's audio track.
        no_face_indices: output frame indices passed through unchanged (no face found).
        seed: the seed used (resolved when -1 was given).
        elapsed_s: wall time of the call, seconds.
    """

    output: Path
    num_frames: int
    fps: float
    width: int
    height: int
    num_video_frames: int
    looped: bool
    num_audio_samples: int
    no_face_indices: list[int] = field(default_factory=list)
    seed: int = 0
    elapsed_s: float = 0.0

    @property
    def num_no_face(self) -> int:
        return len(self.no_face_indices)


def default_device_and_dtype(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """Inference device and dtype (spec 1.3).

    CUDA when available (or when ``device`` names it), float16 if the GPU's compute capability major
    is > 7 (Ampere or newer), else float32; CPU always float32.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError("device: 'cuda' was requested but no CUDA device is available")
        major, _ = torch.cuda.get_device_capability(device)
        return device, (torch.float16 if major > 7 else torch.float32)
    return device, torch.float32


def check_job_arguments(
    video: str | os.PathLike,
    audio: str | os.PathLike,
    output: str | os.PathLike,
    resolution: int = 512,
    num_inference_steps: int = 20,
    guidance_scale: float = 1.5,
    seed: int = 1247,
) -> tuple[Path, Path, Path]:
    """Validate a job's arguments before any model is loaded.

    Returns:
        ``(video, audio, output)`` as paths.

    Raises:
        InvalidInputError: missing input, input is a folder, output folder missing, output equal to
            an input, output extension not a video container, resolution not 256/512, steps < 1,
            guidance_scale < 1 or not finite, seed < -1.
    """
    video, audio, output = Path(video).expanduser(), Path(audio).expanduser(), Path(output).expanduser()
    for what, p in (("video", video), ("audio", audio)):
        if not p.exists():
            raise InvalidInputError(f"{what} file '{p}' does not exist")
        if not p.is_file():
            raise InvalidInputError(f"{what} '{p}' is not a file")
    for what, p in (("video", video), ("audio", audio)):
        if _same_path(output, p):
            raise InvalidInputError(f"output '{output}' is the same file as the {what} input; choose another path")
    if output.is_dir():
        raise InvalidInputError(f"output '{output}' is a folder; expected a file path such as out.mp4")
    if output.suffix.lower() not in (".mp4", ".m4v", ".mov", ".mkv"):
        raise InvalidInputError(f"output '{output}': expected a .mp4, .m4v, .mov or .mkv file name, got '{output.suffix}'")
    if not output.parent.is_dir():
        raise InvalidInputError(f"output folder '{output.parent}' does not exist")
    if isinstance(resolution, bool) or resolution not in SUPPORTED_RESOLUTIONS:
        raise InvalidInputError(f"resolution: expected 256 (LatentSync 1.5) or 512 (1.6), got {resolution!r}")
    if isinstance(num_inference_steps, bool) or int(num_inference_steps) != num_inference_steps or num_inference_steps < 1:
        raise InvalidInputError(f"steps: expected an integer >= 1, got {num_inference_steps!r}")
    if num_inference_steps > 1000:
        raise InvalidInputError(f"steps: expected at most 1000 (training timesteps), got {num_inference_steps}")
    if not math.isfinite(float(guidance_scale)) or guidance_scale < 1.0:
        raise InvalidInputError(f"guidance_scale: expected a number >= 1.0 (1.0 = no guidance), got {guidance_scale!r}")
    if int(seed) != seed or seed < -1:
        raise InvalidInputError(f"seed: expected an integer >= 0 (or -1 for a random seed), got {seed!r}")
    return video, audio, output


def load_inputs(video: str | os.PathLike, audio: str | os.PathLike):
    """Probe the video and decode the audio; the checks that need the media but no model.

    Returns:
        ``(VideoInfo, waveform)``: the video's facts and the audio as float32 ``[T]`` mono 16 kHz.

    Raises:
        InvalidInputError: unreadable / corrupt / stream-less video or audio.
        AudioTooShortError: audio shorter than one frame of the video.
    """
    from latentsync.video.io import probe_video, read_audio

    info = probe_video(video)
    waveform = read_audio(audio, SAMPLE_RATE)
    if waveform.shape[0] * info.fps < SAMPLE_RATE:
        raise AudioTooShortError(
            f"audio '{audio}' lasts {waveform.shape[0] / SAMPLE_RATE:.3f} s, shorter than one video frame "
            f"({1 / info.fps:.3f} s at {info.fps:g} fps)"
        )
    return info, waveform


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


# ---------------------------------------------------------------------------------------------
# Frame source: forward decode + ping-pong spill
# ---------------------------------------------------------------------------------------------


class _FrameSpill:
    """Raw uint8 files holding every source frame and its aligned face (looping only)."""

    def __init__(self, folder: Path, n: int, frame_shape: tuple[int, ...], face_shape: tuple[int, ...]):
        self.n = n
        self.frame_bytes = int(np.prod(frame_shape))
        self.face_bytes = int(np.prod(face_shape))
        self.frame_shape, self.face_shape = tuple(frame_shape), tuple(face_shape)
        self.frames_path, self.faces_path = folder / "frames.u8", folder / "faces.u8"
        self._frames = open(self.frames_path, "w+b")
        self._faces = open(self.faces_path, "w+b")
        self.matrices = np.zeros((n, 2, 3), dtype=np.float32)
        self.has_face = np.zeros(n, dtype=bool)
        self.count = 0

    def append(self, frames: np.ndarray, crops: FaceCrops) -> None:
        k = frames.shape[0]
        self._frames.seek(self.count * self.frame_bytes)
        self._frames.write(np.ascontiguousarray(frames).tobytes())
        self._faces.seek(self.count * self.face_bytes)
        self._faces.write(np.ascontiguousarray(torch.as_tensor(crops.faces).numpy()).tobytes())
        self.matrices[self.count : self.count + k] = torch.as_tensor(crops.affine_matrices).numpy()
        missing = set(crops.no_face_indices)
        self.has_face[self.count : self.count + k] = [crops.start_index + i not in missing for i in range(k)]
        self.count += k

    def _read(self, fh, index: np.ndarray, nbytes: int, shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty((len(index), *shape), dtype=np.uint8)
        for j, i in enumerate(index.tolist()):
            fh.seek(int(i) * nbytes)
            fh.readinto(memoryview(out[j]).cast("B"))
        return out

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``[k, H, W, 3]`` and faces ``[k, R, R, 3]`` of the source indices ``index``."""
        self._frames.flush()
        self._faces.flush()
        return (
            self._read(self._frames, index, self.frame_bytes, self.frame_shape),
            self._read(self._faces, index, self.face_bytes, self.face_shape),
        )

    def close(self) -> None:
        self._frames.close()
        self._faces.close()


def _source_segments(
    video: Path,
    frame_indices: np.ndarray,
    num_video_frames: int,
    aligner,
    spill_dir: Path | None,
    resolution: int,
    chunk: int,
) -> Iterator[tuple[np.ndarray, FaceCrops]]:
    """Yield ``(frames uint8 [n,H,W,3], crops)`` for consecutive runs of output frames.

    Output frame ``k`` shows source frame ``frame_indices[k]``. The first ``min(n_out, n_video)``
    outputs are the source in order (decoded and aligned on the fly); when the plan loops, they are
    spilled and the rest is read back from the spill. ``crops.start_index`` is the output index.
    Segments never cross a multiple of ``chunk`` (see :func:`_output_chunks`).
    """
    from latentsync.video.io import iter_frames

    n_out = len(frame_indices)
    n_forward = min(n_out, num_video_frames)
    looped = n_out > num_video_frames
    spill: _FrameSpill | None = None
    mask = aligner.mask.clone()
    pos = 0
    try:
        for frames in iter_frames(video, chunk_size=chunk):
            frames = frames[: n_forward - pos]
            if frames.shape[0] == 0:
                break
            crops = aligner.align(frames, start_index=pos)
            if looped:
                if spill is None:
                    spill = _FrameSpill(spill_dir, num_video_frames, frames.shape[1:], crops.faces.shape[1:])
                spill.append(frames, crops)
            yield frames, crops
            pos += frames.shape[0]
            if pos >= n_forward:
                break
        if pos < n_forward:
            raise InvalidInputError(
                f"video '{video}': decoding stopped after {pos} frames but the file declares {num_video_frames} "
                f"(truncated or damaged file)"
            )
        while pos < n_out:
            idx = frame_indices[pos : min(n_out, (pos // chunk + 1) * chunk)]
            frames, faces = spill.read(idx)
            no_face = [pos + j for j, i in enumerate(idx.tolist()) if not spill.has_face[i]]
            crops = FaceCrops(
                faces=torch.from_numpy(faces),
                affine_matrices=torch.from_numpy(spill.matrices[idx].copy()),
                crop_size=aligner.crop_size,
                mask=mask,
                frame_size=tuple(frames.shape[1:3]),
                resolution=resolution,
                no_face_indices=no_face,
                start_index=pos,
            )
            yield frames, crops
            pos += len(idx)
    finally:
        if spill is not None:
            spill.close()


def _output_chunks(
    segments: Iterator[tuple[np.ndarray, FaceCrops]], chunk: int
) -> Iterator[tuple[np.ndarray, FaceCrops]]:
    """Regroup segments into output chunks ``[16k, 16k + 16)`` as the official loop cuts them.

    The official pipeline loops the video first and then cuts the output frames into chunks of 16;
    here the forward pass and the looped passes arrive as separate segments, so the chunk that
    spans the turn is assembled from two of them.
    """
    frames_parts: list[np.ndarray] = []
    crops_parts: list[FaceCrops] = []
    have = 0
    for frames, crops in segments:
        frames_parts.append(frames)
        crops_parts.append(crops)
        have += frames.shape[0]
        if have >= chunk:
            if have > chunk:
                raise AssertionError("segments must not cross chunk boundaries")
            yield (np.concatenate(frames_parts) if len(frames_parts) > 1 else frames_parts[0]), FaceCrops.concat(crops_parts)
            frames_parts, crops_parts, have = [], [], 0
    if have:
        yield (np.concatenate(frames_parts) if len(frames_parts) > 1 else frames_parts[0]), FaceCrops.concat(crops_parts)


# ---------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------


class LipSyncPipeline:
    """Loaded models + settings; call it on (video, audio, output) files.

    Args:
        unet: ``UNet3DConditionModel`` (on ``device`` / ``dtype``).
        vae: ``AutoencoderKL`` from :func:`latentsync.vae.load_vae` (on ``device`` / ``dtype``).
        whisper: openai-whisper model (``latentsync.checkpoints.load_whisper``).
        resolution: face resolution, 256 (LatentSync 1.5) or 512 (1.6).
        device, dtype: inference placement (default: :func:`default_device_and_dtype`).
        scheduler_config: DDIM config dict; default the official one.
        vae_batch_size: images per VAE call (memory bound).
        chunk_frames: frames denoised together (official 16; at most 24).
        landmarker: optional face landmarker (tests); default mediapipe.

    Raises:
        InvalidInputError: unsupported resolution or chunk size.
    """

    def __init__(
        self,
        unet,
        vae,
        whisper,
        resolution: int = 512,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        scheduler_config: dict | None = None,
        vae_batch_size: int = 8,
        chunk_frames: int = CHUNK_FRAMES,
        landmarker=None,
    ):
        if resolution not in SUPPORTED_RESOLUTIONS:
            raise InvalidInputError(f"resolution: expected 256 or 512, got {resolution!r}")
        if not 1 <= int(chunk_frames) <= 24:
            raise InvalidInputError(f"chunk_frames: expected 1..24 (temporal position encoding), got {chunk_frames}")
        dev, dt = default_device_and_dtype(device)
        self.device, self.dtype = dev, dtype or dt
        self.unet, self.vae, self.whisper = unet, vae, whisper
        self.resolution = int(resolution)
        from latentsync.pipeline.sampler import make_scheduler

        self.scheduler = make_scheduler(scheduler_config)
        self.vae_batch_size = int(vae_batch_size)
        self.chunk_frames = int(chunk_frames)
        self.landmarker = landmarker

    @classmethod
    def from_weights(
        cls,
        weights,
        resolution: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> "LipSyncPipeline":
        """Load the models of a :class:`latentsync.weights.WeightPaths` (or a checkpoint folder).

        Args:
            weights: ``WeightPaths`` from :func:`latentsync.weights.resolve_weights`, or a checkpoint
                folder path (resolved with downloads allowed unless ``HF_HUB_OFFLINE`` is set).
            resolution: face resolution; default ``weights.resolution``.
            device, dtype: default :func:`default_device_and_dtype`.
            kwargs: passed to the constructor.

        Raises:
            MissingWeightsError, CheckpointError: files absent or unusable.
        """
        from latentsync.checkpoints import load_unet, load_whisper
        from latentsync.vae import load_vae
        from latentsync.weights import WeightPaths, resolve_weights

        if not isinstance(weights, WeightPaths):
            weights = resolve_weights(weights, resolution or 512)
        resolution = int(resolution or weights.resolution)
        dev, dt = default_device_and_dtype(device)
        dt = dtype or dt
        unet = load_unet(weights.unet, weights.unet_config, device=dev, dtype=dt, resolution=resolution)
        vae = load_vae(weights.vae, device=dev, dtype=dt)
        whisper = load_whisper(weights.whisper, device=dev)
        return cls(unet, vae, whisper, resolution=resolution, device=dev, dtype=dt, **kwargs)

    # -- steps ------------------------------------------------------------------------------

    def _audio_features(self, waveform: np.ndarray) -> torch.Tensor:
        from latentsync.audio.whisper import extract_whisper_features

        # spec 1.3: the official Whisper encoder runs in fp16 on CUDA whatever the pipeline dtype.
        dtype = torch.float16 if self.device.type == "cuda" else None
        return extract_whisper_features(self.whisper, waveform, dtype=dtype)

    def _denoise_chunk(
        self,
        crops: FaceCrops,
        audio_embeds: torch.Tensor,
        noise: torch.Tensor,
        unet,
        num_inference_steps: int,
        guidance_scale: float,
        eta: float,
        generator: torch.Generator,
        step_callback,
        chunk_index: int,
    ) -> torch.Tensor:
        """Generated faces of one chunk: float ``[n, R, R, 3]`` ~0..1 (not clamped), CPU."""
        from latentsync.pipeline.faces import composite_faces, sample_face_latents
        from latentsync.vae import decode_latents

        latents = sample_face_latents(
            unet, self.vae, crops.faces, crops.mask, audio_embeds, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, generator=generator, noise=noise, eta=eta, device=self.device,
            dtype=self.dtype, scheduler=self.scheduler, vae_batch_size=self.vae_batch_size,
            chunk_size=max(len(crops), 1), chunk_index=chunk_index, callback=step_callback,
        )
        decoded = decode_latents(self.vae, latents.to(device=self.device, dtype=self.dtype), self.vae_batch_size)
        # spec 1.10: keep the original aligned pixels where the mask says "keep".
        return composite_faces((decoded.float() / 2 + 0.5).permute(0, 2, 3, 1).cpu(), crops.faces, crops.mask)

    # -- the job ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        video: str | os.PathLike,
        audio: str | os.PathLike,
        output: str | os.PathLike,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.5,
        seed: int = 1247,
        deepcache: bool = False,
        eta: float = 0.0,
        callback: ProgressCallback | None = None,
        crf: int = 18,
        tmp_dir: str | os.PathLike | None = None,
    ) -> LipSyncResult:
        """Lip-sync ``video`` to ``audio`` and write ``output`` (spec 1, streaming).

        Args:
            video: input video file (any PyAV-decodable container; its fps is kept).
            audio: speech (WAV/MP3/... or a video's audio track); resampled to 16 kHz mono.
            output: output file (.mp4/.mov/.mkv); must differ from both inputs. Written atomically.
            num_inference_steps: DDIM steps (>= 1; official 20).
            guidance_scale: zero-audio CFG scale (>= 1; 1 disables CFG; official 1.5).
            seed: seed of the initial noise and the VAE posterior samples (CPU generator, so equal on
                every device); -1 picks a random seed (reported in the result).
            deepcache: reuse deep U-Net features on 2 of every 3 steps (spec 1.11).
            eta: DDIM eta (official 0).
            callback: receives :class:`Progress`; raise from it to cancel (no output is written).
            crf: H.264 quality of the output (lower = better).
            tmp_dir: where the loop spill goes (default the system temp folder).

        Returns:
            :class:`LipSyncResult`.

        Raises:
            InvalidInputError: bad arguments or unreadable media (nothing is written).
            AudioTooShortError: audio shorter than one video frame.
            NoFaceError: no face in any frame (nothing is written).
        """
        from latentsync.audio.windows import window_indices
        from latentsync.face.aligner import FaceAligner
        from latentsync.video.io import VideoWriter
        from latentsync.video.timeline import plan_output

        t0 = time.monotonic()
        video, audio, output = check_job_arguments(
            video, audio, output, self.resolution, num_inference_steps, guidance_scale, seed
        )
        emit = callback or (lambda p: None)
        info, waveform = load_inputs(video, audio)
        plan = plan_output(info.num_frames, waveform.shape[0], info.fps, SAMPLE_RATE)
        logger.info(
            "video %s: %d frames %dx%d at %.3f fps; audio %s: %.2f s -> %d output frames%s",
            video, info.num_frames, info.width, info.height, info.fps, audio, waveform.shape[0] / SAMPLE_RATE,
            plan.num_frames, " (video looped forward/backward)" if plan.looped else "",
        )

        emit(Progress("audio", 0, 1))
        features = self._audio_features(waveform)  # [L, 5, 384]
        windows = window_indices(plan.num_frames, info.fps, features.shape[0])  # int64 [n_out, 10]
        emit(Progress("audio", 1, 1))

        if seed == -1:
            seed = int(torch.seed() % (2**63))
        generator = torch.Generator("cpu").manual_seed(int(seed))
        noise = initial_noise(
            self.resolution // 8, generator, dtype=self.dtype, device=self.device,
            init_noise_sigma=float(self.scheduler.init_noise_sigma),
        )
        unet = self.unet
        if deepcache:
            from latentsync.pipeline.deepcache import DeepCacheUNet

            unet = DeepCacheUNet(self.unet, cache_interval=3, cache_branch_id=0)

        n_out, chunk = plan.num_frames, self.chunk_frames
        n_chunks = -(-n_out // chunk)
        total_steps = n_chunks * num_inference_steps
        steps_done = 0
        no_face: list[int] = []

        def on_step(info_) -> None:
            nonlocal steps_done
            steps_done += 1
            emit(Progress("denoise", steps_done, total_steps, info_))

        audio_out = waveform[: plan.num_audio_samples]
        with tempfile.TemporaryDirectory(prefix="latentsync-", dir=tmp_dir) as scratch, FaceAligner(
            self.resolution, landmarker=self.landmarker, device=self.device, fps=float(info.fps)
        ) as aligner, VideoWriter(
            output, info.fps, info.width, info.height, audio=audio_out, sample_rate=SAMPLE_RATE, crf=crf,
            inputs=(video, audio),
        ) as writer:
            source = _output_chunks(
                _source_segments(
                    video, plan.frame_indices, info.num_frames, aligner, Path(scratch), self.resolution, chunk
                ),
                chunk,
            )
            for k, (frames, crops) in enumerate(source):
                start, n = crops.start_index, len(crops)
                no_face.extend(crops.no_face_indices)
                if len(crops.no_face_indices) == n:  # nothing to generate in this chunk
                    steps_done += num_inference_steps
                    emit(Progress("denoise", steps_done, total_steps))
                    writer.write(frames)
                else:
                    idx = windows[start : start + n].reshape(-1).to(features.device)
                    audio_embeds = features[idx].reshape(n, -1, features.shape[-1])  # [n, 50, 384]
                    faces = self._denoise_chunk(
                        crops, audio_embeds, noise, unet, num_inference_steps, guidance_scale, eta,
                        generator, on_step, k,
                    )
                    writer.write(aligner.paste_back(frames, faces, crops))
                emit(Progress("frames", start + n, n_out))
            if writer.num_frames != n_out:
                raise InvalidInputError(f"video '{video}': produced {writer.num_frames} frames, expected {n_out}")
            if len(no_face) == n_out:
                raise NoFaceError(
                    f"video '{video}': no face found in any of its {min(info.num_frames, n_out)} frames used; "
                    "LatentSync needs a visible, roughly frontal face in at least one frame"
                )
        if no_face:
            logger.warning(
                "%d of %d output frames had no face and were left unchanged: %s",
                len(no_face), n_out, _ranges(no_face),
            )
        emit(Progress("done", n_out, n_out))
        return LipSyncResult(
            output=output, num_frames=n_out, fps=float(info.fps), width=info.width, height=info.height,
            num_video_frames=info.num_frames, looped=plan.looped, num_audio_samples=int(audio_out.shape[0]),
            no_face_indices=no_face, seed=int(seed), elapsed_s=time.monotonic() - t0,
        )


def _ranges(indices: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` for logs."""
    parts, start, prev = [], None, None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)


def run_lipsync(
    video: str | os.PathLike,
    audio: str | os.PathLike,
    output: str | os.PathLike,
    weights,
    resolution: int = 512,
    steps: int = 20,
    guidance_scale: float = 1.5,
    seed: int = 1247,
    deepcache: bool = False,
    callback: ProgressCallback | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LipSyncResult:
    """Validate, load the models of ``weights`` and run :class:`LipSyncPipeline` once.

    Args:
        video, audio, output: files (see :meth:`LipSyncPipeline.__call__`).
        weights: ``WeightPaths`` or a checkpoint folder (see :meth:`LipSyncPipeline.from_weights`).
        resolution: 256 or 512.
        steps, guidance_scale, seed, deepcache, callback: see :meth:`LipSyncPipeline.__call__`.
        device, dtype: default :func:`default_device_and_dtype`.

    Returns:
        :class:`LipSyncResult`.

    Raises:
        LatentSyncError subclasses (bad input, missing weights, no face); arguments are checked
        before any model is loaded.
    """
    check_job_arguments(video, audio, output, resolution, steps, guidance_scale, seed)
    pipe = LipSyncPipeline.from_weights(weights, resolution=resolution, device=device, dtype=dtype)
    return pipe(video, audio, output, num_inference_steps=steps, guidance_scale=guidance_scale, seed=seed,
                deepcache=deepcache, callback=callback)
