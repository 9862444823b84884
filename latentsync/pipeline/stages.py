"""The stages of a lip-sync job, one definition each, composed by the CLI pipeline and the nodes.

:class:`~latentsync.pipeline.lipsync.LipSyncPipeline` (files in, file out, streaming) and the ComfyUI
stage nodes (``nodes/``: IMAGE or VIDEO in) both build a job from these pieces, so a rule of the job
lives in one place:

1. **align** -- :func:`choose_speaker` (``face="auto"`` only: a landmark pass over the clip picks the
   active speaker's face track first), then :func:`align_chunks`: one stateful aligner sees the
   frames in order, chunk by chunk (spec 1.7), following the chosen face; frames without it are
   listed, not fatal; :func:`require_face` is the no-face rule (a video with no face at all is an
   error).
2. **timeline** -- :func:`~latentsync.video.timeline.plan_output` / ``loop_indices`` (spec 1.6: one
   output frame per audio window, ping-pong loop or cut) and :func:`output_chunk_starts` (the
   official 16-frame output chunks).
3. **sample** -- :class:`FaceSampler`: the job's seeded generator and its single noise draw, then per
   chunk :func:`~latentsync.pipeline.faces.sample_face_latents` (VAE encode, 13-channel input, DDIM
   with zero-audio CFG, optional DeepCache, spec 1.9-1.11); a chunk without any face is skipped
   (no diffusion, no random draws).
4. **decode** -- :func:`decode_faces`: scaled latents -> faces ``[n, R, R, 3]`` float 0..1.
5. **composite + paste back** -- :func:`paste_generated`: aligned-space composite ``out = gen * (1 - m)
   + ref * m`` (spec 1.10) and the feathered inverse warp into the frames (spec 1.12, or only the
   generated region with optional colour matching: :func:`paste_function`); faces-less frames are
   returned unchanged.

Every stage reports through one callback, ``callback(Progress(stage, done, total))`` (raise from it to
cancel): ``"align"`` and ``"frames"`` count frames, ``"denoise"`` counts DDIM steps over all chunks.
The CLI turns these into tqdm bars, the nodes into ComfyUI progress bars + interrupt checks.

Conventions: frames and aligned faces are uint8 ``[n, H, W, 3]`` / ``[n, R, R, 3]`` RGB; latents are
``[n, 4, R/8, R/8]`` scaled by 0.18215 (``latentsync.vae`` converts); generated faces are float
``[n, R, R, 3]`` nominally 0..1 (the ComfyUI IMAGE layout), which is what the composite and
:func:`latentsync.face.paste.paste_back` take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from latentsync.errors import NoFaceError
from latentsync.pipeline.faces import CHUNK_FRAMES
from latentsync.types import FaceCrops
from latentsync.video.segments import chunk_starts

SAMPLE_RATE = 16000  # Hz of the speech the stages take

if TYPE_CHECKING:
    from latentsync.pipeline.sampler import StepInfo


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a stage reports through ``callback`` (progress bars, logs, interrupts).

    Attributes:
        stage: ``"audio"`` (Whisper features), ``"align"`` (frames aligned), ``"denoise"`` (one DDIM
            step of one chunk), ``"frames"`` (output frames finished), ``"done"``.
        done, total: counters of the stage (frames, or steps over all chunks).
        step: the sampler's :class:`~latentsync.pipeline.sampler.StepInfo` for ``"denoise"``.
    """

    stage: str
    done: int
    total: int
    step: "StepInfo | None" = None


ProgressCallback = Callable[[Progress], None]


def report(callback: ProgressCallback | None, stage: str, done: int, total: int, step=None) -> None:
    """Send ``Progress(stage, done, total, step)`` to ``callback`` (no-op without one)."""
    if callback is not None:
        callback(Progress(stage, int(done), int(total), step))


# ---------------------------------------------------------------------------------------------
# 1. align
# ---------------------------------------------------------------------------------------------


def align_chunks(
    aligner,
    frame_chunks: Iterable[np.ndarray | torch.Tensor],
    *,
    total: int | None = None,
    callback: ProgressCallback | None = None,
) -> Iterator[tuple[np.ndarray | torch.Tensor, FaceCrops]]:
    """Align the faces of a frame sequence, chunk after chunk, with one stateful aligner (spec 1.7).

    Args:
        aligner: an object with ``align(frames, start_index) -> FaceCrops``
            (:class:`~latentsync.face.aligner.FaceAligner`); tracking and smoothing carry over
            between the chunks because they arrive in order.
        frame_chunks: uint8 ``[n, H, W, 3]`` chunks of consecutive frames.
        total: frames expected (for the ``"align"`` progress); default unknown (reported as done).
        callback: receives ``Progress("align", frames_done, total)`` before each chunk (so a
            cancel lands before the work) and after the last.

    Yields:
        ``(frames, crops)`` with ``crops.start_index`` the index of ``frames[0]``.
    """
    pos = 0
    for frames in frame_chunks:
        report(callback, "align", pos, total or pos)
        crops = aligner.align(frames, start_index=pos)
        yield frames, crops
        pos += int(frames.shape[0])
    report(callback, "align", pos, total or pos)


def choose_speaker(
    aligner, frame_chunks: Iterable[np.ndarray | torch.Tensor], speech: np.ndarray | None, speech_name: str = "audio"
) -> None:
    """For ``face="auto"``: scan the clip and make the aligner follow the active speaker.

    A no-op for the other face choices (``frame_chunks`` is then not read). Otherwise every chunk is
    read once for landmarks only (:meth:`~latentsync.face.aligner.FaceAligner.choose_speaker`);
    the later :func:`align_chunks` pass reuses those landmarks instead of detecting again.

    Args:
        aligner: a :class:`~latentsync.face.aligner.FaceAligner`.
        frame_chunks: the clip's uint8 ``[n, H, W, 3]`` chunks from frame 0 (lazy iterable).
        speech: float ``[S]`` 16 kHz mono speech aligned with frame 0, or None.
        speech_name: the input named when ``speech`` is missing.

    Raises:
        InvalidInputError: ``face="auto"`` without speech.
    """
    from latentsync.errors import InvalidInputError

    if aligner.face.mode != "auto":
        return
    if speech is None:
        raise InvalidInputError(
            f"{speech_name}: face choice 'auto' (active speaker) needs the speech; connect it, or choose "
            f"largest, index:N or point:X,Y"
        )
    aligner.choose_speaker(frame_chunks, speech, SAMPLE_RATE)


def require_face(no_face_indices: Sequence[int], num_frames: int, input_name: str = "video") -> None:
    """The no-face rule: frames without a face pass through, a video without any face is an error.

    Args:
        no_face_indices: frames without a face (any order).
        num_frames: frames looked at.
        input_name: the input named in the message (e.g. ``"video 'a.mp4'"``, ``"input 'images'"``).

    Raises:
        NoFaceError: ``num_frames`` is 0 or every frame lacks a face.
    """
    if num_frames > 0 and len(no_face_indices) < num_frames:
        return
    raise NoFaceError(
        f"{input_name}: no face found in any of its {num_frames} frames; LatentSync needs a visible, "
        f"roughly frontal face in at least one frame"
    )


# ---------------------------------------------------------------------------------------------
# 2. timeline
# ---------------------------------------------------------------------------------------------


def output_chunk_starts(num_frames: int, chunk: int = CHUNK_FRAMES) -> range:
    """First output frame of each denoising chunk: ``0, 16, 32, ...`` (official ``data.num_frames``)."""
    return chunk_starts(num_frames, chunk)


# ---------------------------------------------------------------------------------------------
# 3. sample
# ---------------------------------------------------------------------------------------------


class FaceSampler:
    """Face latents of a job, chunk by chunk: one seeded generator, one noise draw (spec 1.9-1.11).

    The random stream for a seed is: the initial noise ``[1, 4, 1, R/8, R/8]`` (drawn here, shared by
    every frame), then per chunk with a face the VAE posterior samples of the masked faces and of the
    references (and eta noise). A chunk whose frames all lack a face is skipped (no diffusion, no
    draws), so the CLI and the nodes give the same latents for the same seed.

    Args:
        unet: ``UNet3DConditionModel`` on ``device`` / ``dtype``.
        vae: diffusers-style ``AutoencoderKL`` (or the ComfyUI adapter) for the encodes.
        resolution: face size R (256 or 512).
        num_frames: output frames of the job (for the ``"denoise"`` total).
        num_inference_steps, guidance_scale, eta, deepcache: see
            :func:`~latentsync.pipeline.faces.sample_face_latents`.
        seed: seed of the CPU generator (>= 0; resolve -1 with :func:`resolve_seed` first).
        device, dtype: where the models run.
        scheduler: DDIM scheduler; default the official config.
        vae_batch_size: images per VAE encode call.
        chunk_frames: frames per chunk (official 16).
        callback: receives ``Progress("denoise", steps_done, total_steps, StepInfo)`` after every step.
        timer: a :class:`~latentsync.pipeline.timing.StageTimer` for the ``encode_latents`` /
            ``denoise`` seconds (optional).
        out_device: where the returned latents go (CPU for the nodes; the device for the CLI's decode).

    Attributes:
        total_steps: ``num_chunks * num_inference_steps``.
    """

    def __init__(
        self,
        unet,
        vae,
        *,
        resolution: int,
        num_frames: int,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.5,
        seed: int = 1247,
        eta: float = 0.0,
        deepcache: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        scheduler=None,
        vae_batch_size: int = 8,
        chunk_frames: int = CHUNK_FRAMES,
        callback: ProgressCallback | None = None,
        timer=None,
        out_device: str | torch.device = "cpu",
    ):
        from latentsync.pipeline.latents import initial_noise
        from latentsync.pipeline.sampler import make_scheduler

        self.unet, self.vae = unet, vae
        self.num_inference_steps, self.guidance_scale = int(num_inference_steps), float(guidance_scale)
        self.eta, self.deepcache = float(eta), bool(deepcache)
        self.device, self.dtype = torch.device(device), dtype
        self.scheduler = scheduler if scheduler is not None else make_scheduler()
        self.vae_batch_size, self.chunk_frames = int(vae_batch_size), int(chunk_frames)
        self.callback, self.timer, self.out_device = callback, timer, out_device
        self.seed = int(seed)
        self.generator = torch.Generator("cpu").manual_seed(self.seed)
        self.noise = initial_noise(
            int(resolution) // 8, self.generator, dtype=dtype, device=self.device,
            init_noise_sigma=float(self.scheduler.init_noise_sigma),
        )
        self.total_steps = len(output_chunk_starts(num_frames, self.chunk_frames)) * self.num_inference_steps
        self.steps_done = 0

    def _on_step(self, info: "StepInfo") -> None:
        self.steps_done += 1
        report(self.callback, "denoise", self.steps_done, self.total_steps, info)

    def __call__(self, crops: FaceCrops, audio_embeds: torch.Tensor, chunk_index: int) -> torch.Tensor | None:
        """Scaled latents float32 ``[n, 4, R/8, R/8]`` (on ``out_device``) of one chunk, or None without any face.

        Args:
            crops: the chunk's aligned faces (``n <= chunk_frames`` rows).
            audio_embeds: float ``[n, 50, 384]``, row ``i`` for face ``i``.
            chunk_index: position of the chunk in the job (reported in ``StepInfo``).
        """
        from latentsync.pipeline.faces import sample_face_latents

        if len(crops.no_face_indices) == len(crops):
            self.steps_done += self.num_inference_steps
            report(self.callback, "denoise", self.steps_done, self.total_steps)
            return None
        return sample_face_latents(
            self.unet, self.vae, crops.faces, crops.mask, audio_embeds,
            num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
            generator=self.generator, noise=self.noise, deepcache=self.deepcache, eta=self.eta,
            device=self.device, dtype=self.dtype, scheduler=self.scheduler, vae_batch_size=self.vae_batch_size,
            chunk_size=max(len(crops), 1), chunk_index=chunk_index, callback=self._on_step, timer=self.timer,
            out_device=self.out_device,
        )


def resolve_seed(seed: int) -> int:
    """``seed`` itself, or a fresh random seed for -1 (reported back to the user)."""
    return int(torch.seed() % (2**63)) if int(seed) == -1 else int(seed)


# ---------------------------------------------------------------------------------------------
# 4. decode
# ---------------------------------------------------------------------------------------------


def decode_faces(vae, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Scaled latents ``[n, 4, h, w]`` -> faces float32 ``[n, 8h, 8w, 3]`` nominally 0..1, CPU (spec 1.10).

    Not clamped (the paste-back clamps after its resize, as the official code does).
    """
    from latentsync.vae import decode_latents

    decoded = decode_latents(vae, latents.to(device=vae.device, dtype=vae.dtype), batch_size)
    return (decoded.float() / 2 + 0.5).permute(0, 2, 3, 1).cpu()


# ---------------------------------------------------------------------------------------------
# 5. composite + paste back
# ---------------------------------------------------------------------------------------------


def paste_function(mode: str = "mouth", colour_match: bool = False, device=None) -> Callable:
    """The ``paste(frames, faces, crops)`` of a job: :func:`latentsync.face.paste.paste_back` with
    the job's paste mode and colour matching (validated here, before any work).

    Args:
        mode: "mouth" (the job default: only the generated region is pasted, every other pixel
            bit-exact; no double resampling of the upper face) or "full" (the official restore).
        colour_match: match the generated region's colour at the seam ("mouth" only).
        device: torch device for the warps (default CPU).

    Raises:
        InvalidInputError: unknown mode, or colour matching with "full".
    """
    from functools import partial

    from latentsync.face.paste import check_paste_options, paste_back

    check_paste_options(mode, colour_match)
    return partial(paste_back, device=device, mode=mode, colour_match=colour_match)


def paste_generated(
    frames: np.ndarray | torch.Tensor,
    generated: torch.Tensor | None,
    crops: FaceCrops,
    paste: Callable | None = None,
) -> np.ndarray | torch.Tensor:
    """Composite generated faces with the aligned originals and paste them into their frames.

    ``blended = generated * (1 - m) + ref * m`` in aligned-face space (spec 1.10, ``m`` the mask,
    1 = keep), then ``paste(frames, blended, crops)`` (spec 1.12); frames listed in
    ``crops.no_face_indices`` come back unchanged.

    Args:
        frames: uint8 ``[n, H, W, 3]`` the frames ``crops`` was made from (numpy or torch).
        generated: float ``[n, R, R, 3]`` 0..1 (from :func:`decode_faces` or a ComfyUI IMAGE), or
            None for a chunk without any face (the frames are returned as they are).
        crops: the chunk's :class:`~latentsync.types.FaceCrops` (``start_index`` = frame of row 0).
        paste: ``paste(frames, faces, crops) -> frames``; default
            :func:`latentsync.face.paste.paste_back` on the CPU (pass ``aligner.paste_back`` to warp
            on the aligner's device, or another paste mode).

    Returns:
        uint8 ``[n, H, W, 3]`` of the same kind as ``frames``.
    """
    from latentsync.pipeline.faces import composite_faces

    if generated is None:
        return frames
    if paste is None:
        from latentsync.face.paste import paste_back as paste
    return paste(frames, composite_faces(generated, crops.faces, crops.mask), crops)


# ---------------------------------------------------------------------------------------------
# whole-sequence compositions (the ComfyUI stage nodes: one node = one stage over all frames)
# ---------------------------------------------------------------------------------------------


def align_source(
    source,
    aligner,
    *,
    callback: ProgressCallback | None = None,
    collect: Callable[[Iterable[FaceCrops]], FaceCrops] | None = None,
    speech: np.ndarray | None = None,
) -> FaceCrops:
    """Align every frame of a frame source (following the aligner's face choice) and apply the no-face rule.

    Args:
        source: a frame source (:mod:`latentsync.video.sources`: ``chunks()``, ``num_frames``, ``name``).
        aligner: see :func:`align_chunks`.
        callback: ``"align"`` progress.
        collect: joins the per-chunk crops as they come (default: in memory, ``FaceCrops.concat``;
            :func:`latentsync.video.segments.collect_crops` spills a long video's faces to a file).
        speech: float ``[S]`` 16 kHz mono speech, needed for ``face="auto"`` (:func:`choose_speaker`).

    Returns:
        crops of all ``source.num_frames`` frames (``start_index`` 0).

    Raises:
        NoFaceError: no frame has a face (a face-less source is found by a probe of a few frames,
            :func:`latentsync.face.probe.require_face_in_source`, before the whole of it is aligned).
        InvalidInputError: ``face="auto"`` without speech.
    """
    from latentsync.face.probe import require_face_in_source

    require_face_in_source(source, aligner)
    choose_speaker(aligner, source.chunks(), speech)
    parts = (c for _, c in align_chunks(aligner, source.chunks(), total=source.num_frames, callback=callback))
    crops = collect(parts) if collect is not None else FaceCrops.concat(list(parts))
    require_face(crops.no_face_indices, len(crops), source.name)
    return crops


def timeline_chunks(crops: FaceCrops, num_frames: int, chunk: int = CHUNK_FRAMES) -> Iterator[tuple[int, FaceCrops]]:
    """``(start, crops)`` per output chunk of a timeline of ``num_frames`` over ``crops`` (spec 1.6).

    Output frame ``k`` uses row ``loop_indices(len(crops), num_frames)[k]`` (ping-pong when longer,
    cut when shorter); each chunk's crops come from ``crops.select`` (``start_index`` 0, face-less
    rows renumbered).
    """
    from latentsync.video.timeline import loop_indices

    idx = loop_indices(len(crops), num_frames)
    for s in output_chunk_starts(num_frames, chunk):
        yield s, crops.select(idx[s : s + chunk])


def sample_timeline(sampler: FaceSampler, crops: FaceCrops, audio_embeds: torch.Tensor) -> torch.Tensor:
    """Scaled latents float32 ``[F, 4, R/8, R/8]`` for F = ``len(audio_embeds)`` output frames.

    Faces are looped or cut to the audio (:func:`timeline_chunks`); chunks without any face stay zero
    (they are passed through at paste-back).
    """
    n_out = int(audio_embeds.shape[0])
    size = int(crops.resolution) // 8
    out = torch.zeros((n_out, 4, size, size), dtype=torch.float32)
    for k, (s, part) in enumerate(timeline_chunks(crops, n_out, sampler.chunk_frames)):
        latents = sampler(part, audio_embeds[s : s + len(part)], k)
        if latents is not None:
            out[s : s + len(part)] = latents
    return out


def paste_source(
    source,
    crops: FaceCrops,
    faces: Callable[[int, int], torch.Tensor],
    num_frames: int,
    spill_dir,
    *,
    paste: Callable | None = None,
    chunk: int = CHUNK_FRAMES,
    callback: ProgressCallback | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Composite + paste generated faces into the frames of a source, along the output timeline.

    The source is read once, in order; when the timeline loops, its frames are spilled to
    ``spill_dir`` and read back (:func:`latentsync.video.segments.source_segments`).

    Args:
        source: frame source of the frames ``crops`` was made from (same count and size).
        crops: aligned faces of all source frames.
        faces: ``faces(start, n) -> float [n, R, R, 3]`` 0..1, the generated faces of output frames
            ``start .. start + n - 1`` (an IMAGE slice, or latents decoded chunk by chunk).
        num_frames: output frames F (= generated faces).
        spill_dir: folder for the loop spill.
        paste: see :func:`paste_generated`.
        chunk: output chunk size.
        callback: ``"frames"`` progress (before each chunk and after the last).

    Yields:
        ``(start, frames uint8 [n, H, W, 3])`` per output chunk, in order.

    Raises:
        InvalidInputError: ``crops`` does not belong to ``source`` (count or frame size).
    """
    from latentsync.errors import InvalidInputError

    if len(crops) != source.num_frames or tuple(crops.frame_size) != tuple(source.frame_size):
        raise InvalidInputError(
            f"input 'face_crops' was made from {len(crops)} frames of {tuple(crops.frame_size)} (H, W) but "
            f"{source.name} has {source.num_frames} frames of {tuple(source.frame_size)}; connect the same "
            f"frames to both nodes"
        )
    return _pasted_chunks(source, crops, faces, num_frames, spill_dir, paste, chunk, callback)


def _pasted_chunks(source, crops, faces, num_frames, spill_dir, paste, chunk, callback):
    from latentsync.video.segments import output_chunks, source_segments, take_frames
    from latentsync.video.timeline import loop_indices

    def aligned():  # the source's frames with their stored crops, in order
        pos = 0
        for frames in take_frames(source.chunks(chunk), min(num_frames, source.num_frames)):
            yield frames, _rows(crops, pos, len(frames))
            pos += len(frames)

    segments = source_segments(aligned(), loop_indices(source.num_frames, num_frames), source.num_frames,
                               spill_dir, chunk, what=source.name)
    for frames, part in output_chunks(segments, chunk):
        report(callback, "frames", part.start_index, num_frames)
        yield part.start_index, paste_generated(frames, faces(part.start_index, len(part)), part, paste)
    report(callback, "frames", num_frames, num_frames)


def _rows(crops: FaceCrops, start: int, n: int) -> FaceCrops:
    """Rows ``start .. start + n - 1`` of ``crops`` as a run starting at frame ``start``."""
    part = crops.select(np.arange(start, start + n))
    part.no_face_indices = [start + i for i in part.no_face_indices]
    part.start_index = start
    return part
