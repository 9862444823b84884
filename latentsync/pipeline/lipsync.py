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
   encode into the output. Chunks without any face skip the diffusion. Decode + align of the next
   chunk and paste + encode of the previous one run in two threads while the current chunk is
   denoised (:mod:`latentsync.pipeline.overlap`; same output as one stage after the other).
5. The output file appears only when everything succeeded (``VideoWriter`` writes a temporary file
   and renames it); the audio track is the input audio cut to the output's duration.

Looping and memory: the frames of the first forward pass are spilled to raw files when the plan
loops (:mod:`latentsync.video.segments`); per-frame data kept in memory are the affine matrices, a
no-face flag and the audio index table. The stages themselves are :mod:`latentsync.pipeline.stages`,
which the ComfyUI nodes compose too.

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
from types import SimpleNamespace

import numpy as np
import torch

from latentsync.device import default_device_and_dtype, prepare_models
from latentsync.errors import AudioTooShortError, InvalidInputError
from latentsync.pipeline.faces import CHUNK_FRAMES  # official data.num_frames (16); the temporal layers accept 1..24
from latentsync.pipeline.overlap import run_overlapped
from latentsync.pipeline.stages import (FaceSampler, ProgressCallback, align_chunks, choose_speaker, decode_faces,
                                        paste_function, paste_generated, report, require_face, resolve_seed)
from latentsync.pipeline.timing import StageTimer
from latentsync.video.segments import output_chunks, source_segments, take_frames

# diffusers-based modules (sampler, vae) are imported where used, so that argument and file checks
# (check_job_arguments, load_inputs) answer quickly without importing diffusers.

logger = logging.getLogger(__name__)

SUPPORTED_RESOLUTIONS = (256, 512)
SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------------------------
# Public data
# ---------------------------------------------------------------------------------------------


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
        stage_seconds: seconds inside each stage (:data:`latentsync.pipeline.timing.STAGES`), summed over
            chunks; overlapped stages add up to more than ``elapsed_s``.
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
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def num_no_face(self) -> int:
        return len(self.no_face_indices)


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
            guidance_scale < 1 or not finite, seed outside -1..2**64-1.
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
    if int(seed) != seed or not -1 <= seed <= 2**64 - 1:  # torch.Generator.manual_seed's range
        raise InvalidInputError(f"seed: expected an integer 0..2**64-1 (or -1 for a random seed), got {seed!r}")
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
        scheduler_config: scheduler config dict (betas, training steps); default the official one.
        scheduler: ``"ddim"`` (official) or ``"dpmsolver++"`` (fast mode, ~10 steps; see
            :mod:`latentsync.pipeline.sampler` for what it trades).
        vae_batch_size: images per VAE call; default :func:`latentsync.vae.auto_batch_size` (16 on the
            CPU as officially, as many as half the free memory holds on CUDA, at most 32).
        compile: ``torch.compile`` the U-Net (off by default; see :mod:`latentsync.device`).
        chunk_frames: frames denoised together (official 16; at most 24).
        landmarker: optional face landmarker (tests); default mediapipe.

    Raises:
        InvalidInputError: unsupported resolution, chunk size or scheduler name.
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
        scheduler: str = "ddim",
        vae_batch_size: int | None = None,
        chunk_frames: int = CHUNK_FRAMES,
        landmarker=None,
        compile: bool = False,
    ):
        if resolution not in SUPPORTED_RESOLUTIONS:
            raise InvalidInputError(f"resolution: expected 256 or 512, got {resolution!r}")
        if not 1 <= int(chunk_frames) <= 24:
            raise InvalidInputError(f"chunk_frames: expected 1..24 (temporal position encoding), got {chunk_frames}")
        dev, dt = default_device_and_dtype(device)
        self.device, self.dtype = dev, dtype or dt
        self.unet, self.vae = prepare_models(unet, vae, self.device, compile=compile)
        self.whisper = whisper
        self.resolution = int(resolution)
        from latentsync.pipeline.sampler import make_scheduler
        from latentsync.vae import auto_batch_size

        self.scheduler = make_scheduler(scheduler_config, scheduler)
        self.vae_batch_size = int(vae_batch_size or auto_batch_size(self.device, self.resolution, self.dtype))
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
        overlap: bool = True,
        synchronize_timing: bool = False,
        face: str = "largest",
        paste_mode: str = "mouth",
        colour_match: bool = False,
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
            overlap: decode + align the next chunk and paste + encode the previous one while the
                current one is denoised (:func:`latentsync.pipeline.overlap.run_overlapped`); the
                output is the same as with ``False`` (one stage after the other).
            synchronize_timing: wait for the device at the end of every stage so that
                ``LipSyncResult.stage_seconds`` is exact on CUDA (slower; see
                :mod:`latentsync.pipeline.timing`).
            face: which face to lip-sync when there are several: "largest" (default), "auto" (the
                active speaker, from the speech), "index:N" (0 = leftmost), "point:X,Y" (0..1);
                see :mod:`latentsync.face.speaker`. The other faces are left untouched.
            paste_mode: "mouth" (default: only the generated region is pasted back, every other
                pixel stays bit-exact) or "full" (the official restore of the whole aligned face);
                see :mod:`latentsync.face.paste`.
            colour_match: match the generated region's colour to the frame at the seam ("mouth").

        Returns:
            :class:`LipSyncResult`.

        Raises:
            InvalidInputError: bad arguments or unreadable media (nothing is written).
            AudioTooShortError: audio shorter than one video frame.
            NoFaceError: no face in any frame (nothing is written); a video without a face is found
                by a probe of a few frames (:mod:`latentsync.face.probe`) before any other work.
        """
        from latentsync.audio.windows import window_indices
        from latentsync.face.aligner import FaceAligner
        from latentsync.face.probe import require_face_in_source
        from latentsync.face.speaker import parse_face_choice
        from latentsync.video.io import VideoWriter, iter_frames
        from latentsync.video.sources import FileFrames
        from latentsync.video.timeline import plan_output

        t0 = time.monotonic()
        # 1. check inputs, read the audio, plan the timeline (spec 1.6)
        video, audio, output = check_job_arguments(
            video, audio, output, self.resolution, num_inference_steps, guidance_scale, seed
        )
        face_choice = parse_face_choice(face)
        paste = paste_function(paste_mode, colour_match, device=self.device)
        info, waveform = load_inputs(video, audio)
        with FaceAligner(self.resolution, landmarker=self.landmarker, device=self.device, fps=float(info.fps)) as probe:
            require_face_in_source(FileFrames.open(video), probe)  # a face-less video fails here, not at the end
            probe.reset()  # a shared landmarker starts the real pass untracked
        plan = plan_output(info.num_frames, waveform.shape[0], info.fps, SAMPLE_RATE)
        logger.info(
            "video %s: %d frames %dx%d at %.3f fps; audio %s: %.2f s -> %d output frames%s",
            video, info.num_frames, info.width, info.height, info.fps, audio, waveform.shape[0] / SAMPLE_RATE,
            plan.num_frames, " (video looped forward/backward)" if plan.looped else "",
        )
        n_out, chunk = plan.num_frames, self.chunk_frames

        # 2. Whisper features of the whole audio; per-frame windows gathered per chunk (spec 1.4)
        timer = StageTimer(self.device, synchronize=synchronize_timing)
        report(callback, "audio", 0, 1)
        with timer("audio"):
            features = self._audio_features(waveform)  # [L, 5, 384]
        windows = window_indices(n_out, info.fps, features.shape[0])  # int64 [n_out, 10]
        report(callback, "audio", 1, 1)

        # 3. the sampler of the job: seed, single noise draw (spec 1.9)
        sampler = FaceSampler(
            self.unet, self.vae, resolution=self.resolution, num_frames=n_out,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=resolve_seed(seed),
            eta=eta, deepcache=deepcache, device=self.device, dtype=self.dtype, scheduler=self.scheduler,
            vae_batch_size=self.vae_batch_size, chunk_frames=chunk, callback=callback, timer=timer,
            out_device=self.device,
        )

        # 4. per output chunk: align (forward pass) or read back (loop) | sample, decode | paste, write;
        #    the three run overlapped (reader thread | this thread | writer thread), chunks in order
        no_face: list[int] = []
        audio_out = waveform[: plan.num_audio_samples]
        n_forward = min(n_out, info.num_frames)
        with tempfile.TemporaryDirectory(prefix="latentsync-", dir=tmp_dir) as scratch, FaceAligner(
            self.resolution, landmarker=self.landmarker, device=self.device, fps=float(info.fps), face=face_choice
        ) as aligner, VideoWriter(
            output, info.fps, info.width, info.height, audio=audio_out, sample_rate=SAMPLE_RATE, crf=crf,
            inputs=(video, audio),
        ) as writer:
            choose_speaker(aligner, take_frames(iter_frames(video, chunk_size=chunk), n_forward), waveform)
            decoded = timer.timed_iter("decode", iter_frames(video, chunk_size=chunk))
            aligned = align_chunks(SimpleNamespace(align=timer.timed("align", aligner.align)),
                                   take_frames(decoded, n_forward), total=n_forward, callback=callback)
            segments = source_segments(aligned, plan.frame_indices, info.num_frames, Path(scratch), chunk,
                                       what=f"video '{video}'")

            def generate(item):  # this thread only: the seeded generator and the accelerator's work
                frames, crops = item
                start, n = crops.start_index, len(crops)
                no_face.extend(crops.no_face_indices)
                idx = windows[start : start + n].reshape(-1).to(features.device)
                latents = sampler(crops, features[idx].reshape(n, -1, features.shape[-1]), start // chunk)  # [n, 50, 384]
                if latents is None:
                    return frames, None, crops
                with timer("decode_latents"):
                    return frames, decode_faces(self.vae, latents, self.vae_batch_size), crops

            def paste_and_write(item) -> None:
                frames, faces, crops = item
                with timer("paste"):
                    frames = paste_generated(frames, faces, crops, paste)
                with timer("encode_video"):
                    writer.write(frames)
                report(callback, "frames", crops.start_index + len(crops), n_out)

            run_overlapped(output_chunks(segments, chunk), generate, paste_and_write, overlap=overlap)
            if writer.num_frames != n_out:
                raise InvalidInputError(f"video '{video}': produced {writer.num_frames} frames, expected {n_out}")
            require_face(no_face, n_out, f"video '{video}'")
        if no_face:
            logger.warning(
                "%d of %d output frames had no face and were left unchanged: %s",
                len(no_face), n_out, _ranges(no_face),
            )
        report(callback, "done", n_out, n_out)
        return LipSyncResult(
            output=output, num_frames=n_out, fps=float(info.fps), width=info.width, height=info.height,
            num_video_frames=info.num_frames, looped=plan.looped, num_audio_samples=int(audio_out.shape[0]),
            no_face_indices=no_face, seed=sampler.seed, elapsed_s=time.monotonic() - t0,
            stage_seconds=timer.seconds(),
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
