"""Command line: ``python -m latentsync infer --video V --audio A --output O [...]``.

Every :class:`~latentsync.errors.LatentSyncError` (bad input, missing weights, no face, ...) ends the
program with one line ``error: ...`` on stderr and exit code 2, and no output file. Arguments, the
input files, the output folder (a probe file is created and removed) and the presence of a face (a
probe of a few frames, :mod:`latentsync.face.probe`) are checked before any model is loaded.

Interrupts clean up as errors do: SIGINT (Ctrl-C) exits 130, SIGTERM (``timeout``, ``docker stop``,
systemd) 143 and SIGHUP 129; the partial output, the loop spill and the ``--tiny-random`` checkpoint
folder are removed and a previous file at ``--output`` is left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

from latentsync.errors import InvalidInputError, LatentSyncError
from latentsync.face.paste import PASTE_MODE_HELP, PASTE_MODES, check_paste_options
from latentsync.face.speaker import FACE_CHOICE_HELP, parse_face_choice
from latentsync.config import SCHEDULERS

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
#: Signals turned into a clean stop (exit code 128 + signal number, the shell convention).
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
NOT_LIPSYNCED = (
    "--tiny-random: the models have tiny RANDOM weights; the output is NOT lip-synced "
    "(only the pipeline is exercised)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: ...``) and exit code 2, like the rest of the CLI."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise InvalidInputError(message)


class _Terminated(BaseException):
    """Raised in the main thread by a SIGTERM / SIGHUP handler, so that every ``with`` / ``finally``
    cleans up as for Ctrl-C. A BaseException: ``except Exception`` blocks let it pass."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _terminating_signals_raise():
    """Turn SIGTERM / SIGHUP into :class:`_Terminated` during the block (main thread only; elsewhere
    Python cannot install handlers and the default action stays). After the first signal further
    ones are ignored, so that the cleanup is not cut short."""

    def handler(signum, frame):
        for sig in TERMINATING_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise _Terminated(signum)

    previous = {}
    try:
        for sig in TERMINATING_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device_arg(text: str) -> str:
    """argparse type of ``--device``: auto, cpu, mps, cuda or cuda:N (an existing N when CUDA is present)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    if text.startswith("cuda:"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count and int(text[5:]) >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m latentsync", description="LatentSync lip sync (audio-conditioned latent diffusion).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("infer", help="lip-sync a video to a speech recording")
    p.add_argument("--video", required=True,
                   help="input video or still image (its fps and size are kept; an odd width or height is padded "
                        "by one pixel, as H.264 yuv420p needs even sizes)")
    p.add_argument("--audio", required=True, help="speech: WAV, MP3, ... or a video's audio track")
    p.add_argument("--output", required=True, help="output video (.mp4); written only when the job succeeds")
    p.add_argument("--checkpoint-dir", default=os.environ.get("LATENTSYNC_CHECKPOINT_DIR", "checkpoints"),
                   help="folder with latentsync_unet.pt, whisper/tiny.pt, sd-vae-ft-mse/ (downloaded when missing "
                        "unless HF_HUB_OFFLINE=1); default: %(default)s")
    p.add_argument("--resolution", type=int, default=512,
                   help="face resolution: 512 (LatentSync 1.6, default) or 256 (1.5)")
    p.add_argument("--steps", type=int, default=20,
                   help="sampler steps (default 20, the official DDIM setting; about 10 with dpmsolver++)")
    p.add_argument("--scheduler", default="ddim", choices=SCHEDULERS,
                   help="ddim (official, default) or dpmsolver++ (fast mode: similar quality in about half the "
                        "steps, not the official result; see docs/speed.md)")
    p.add_argument("--guidance-scale", type=float, default=1.5, help="CFG scale, >= 1; 1 disables (default 1.5)")
    p.add_argument("--seed", type=int, default=1247, help="random seed; -1 = random (default 1247)")
    p.add_argument("--deepcache", action="store_true", help="DeepCache: reuse deep U-Net features (faster)")
    p.add_argument("--tiny-random", action="store_true",
                   help="build tiny random-weight models on the fly (pipeline test; output NOT lip-synced)")
    p.add_argument("--device", default="auto", type=_device_arg, help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", choices=("auto", "float16", "float32", "bfloat16"),
                   help="auto: bfloat16 on CUDA with compute capability >= 8, float16 on 7.x, else float32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the U-Net (CUDA; the first chunk pays minutes of compilation)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality of the output, 0..51 (default 18)")
    p.add_argument("--face", default="largest", help=f"which face to lip-sync when there are several: {FACE_CHOICE_HELP}")
    p.add_argument("--paste-mode", default="mouth", choices=PASTE_MODES,
                   help=f"how generated faces go back into the frames; {PASTE_MODE_HELP} (default mouth)")
    p.add_argument("--colour-match", action="store_true",
                   help="match the generated region's colour to the frame along the seam (mean/std per channel; "
                        "--paste-mode mouth only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return "; ".join(lines) or type(err).__name__


class _Bars:
    """tqdm bars per stage, fed by the pipeline's progress callback."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars = {}

    def __call__(self, p) -> None:
        if not self.enabled or p.stage not in ("audio", "frames", "denoise"):
            return
        from tqdm import tqdm

        bar = self.bars.get(p.stage)
        if bar is None:
            desc, unit = {"audio": ("audio features", "file"), "frames": ("frames", "frame"),
                          "denoise": ("denoise", "step")}[p.stage]
            bar = self.bars[p.stage] = tqdm(total=p.total, desc=desc, unit=unit, position=len(self.bars),
                                            leave=True, dynamic_ncols=True, file=sys.stderr)
        bar.update(p.done - bar.n)
        if p.done >= p.total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _dtype(name: str):
    import torch

    return {"auto": None, "float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def _infer(args: argparse.Namespace) -> int:
    from latentsync.device import default_device_and_dtype
    from latentsync.pipeline.lipsync import LipSyncPipeline, check_job_arguments, load_inputs
    from latentsync.face.aligner import FaceAligner
    from latentsync.face.probe import require_face_in_source
    from latentsync.video.io import check_output_writable, encoded_size
    from latentsync.video.sources import FileFrames

    # 1. everything that can be checked without models
    check_job_arguments(args.video, args.audio, args.output, args.resolution, args.steps, args.guidance_scale, args.seed)
    if not 0 <= args.crf <= 51:
        raise InvalidInputError(f"crf: expected 0..51, got {args.crf}")
    check_output_writable(args.output)
    parse_face_choice(args.face)
    check_paste_options(args.paste_mode, args.colour_match)
    device, auto_dtype = default_device_and_dtype(None if args.device == "auto" else args.device)
    dtype = _dtype(args.dtype) or auto_dtype
    info, waveform = load_inputs(args.video, args.audio)
    n_samples = int(waveform.shape[0])
    del waveform
    with FaceAligner(args.resolution, fps=float(info.fps)) as aligner:  # a face-less video fails here, in seconds
        require_face_in_source(FileFrames.open(args.video), aligner)
    size = f"{info.width}x{info.height}"
    out_size = "{}x{}".format(*encoded_size(info.width, info.height))
    if out_size != size:
        size += f" (odd side: written as {out_size}, H.264 yuv420p needs even sizes)"
    print(f"video: {info.num_frames} frames {size} @ {info.fps:g} fps; "
          f"audio: {n_samples / 16000:.2f} s; device {device} {str(dtype).replace('torch.', '')}", file=sys.stderr)

    # 2. weights
    with tempfile.TemporaryDirectory(prefix="latentsync-tiny-") as tiny_dir:
        if args.tiny_random:
            print(f"WARNING: {NOT_LIPSYNCED}", file=sys.stderr)
            from latentsync.models.tiny import write_tiny_checkpoint_dir

            ckpt_dir = write_tiny_checkpoint_dir(Path(tiny_dir) / "checkpoints")
            download = False
        else:
            ckpt_dir = Path(args.checkpoint_dir)
            download = True
        from latentsync.weights import resolve_weights

        weights = resolve_weights(ckpt_dir, args.resolution, download=download)
        print("loading models ...", file=sys.stderr)
        pipe = LipSyncPipeline.from_weights(weights, resolution=args.resolution, device=device, dtype=dtype,
                                            scheduler=args.scheduler, compile=args.compile)
        if device.type == "cuda":
            import torch

            torch.backends.cudnn.benchmark = True  # fixed chunk shapes: autotuned kernels are reused

        # 3. the job
        bars = _Bars(enabled=not args.quiet)
        try:
            result = pipe(
                args.video, args.audio, args.output, num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale, seed=args.seed, deepcache=args.deepcache,
                callback=bars, crf=args.crf, face=args.face, paste_mode=args.paste_mode,
                colour_match=args.colour_match,
            )
        finally:
            bars.close()
    msg = (f"wrote {result.output}: {result.num_frames} frames at {result.fps:g} fps, "
           "{}x{}, {:.1f} s, seed {}".format(*encoded_size(result.width, result.height), result.elapsed_s, result.seed))
    if result.looped:
        msg += f"; video looped ({result.num_video_frames} source frames)"
    if result.no_face_indices:
        msg += f"; {result.num_no_face} frames without a face left unchanged"
    print(msg)
    if args.tiny_random:
        print(f"NOTE: {NOT_LIPSYNCED}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 LatentSyncError, 130 SIGINT, 143 SIGTERM, 129 SIGHUP)."""
    # Log records of the backend (e.g. frames without a face) go to this call's stderr.
    log = logging.getLogger("latentsync")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with _terminating_signals_raise():
            args = build_parser().parse_args(argv)
            if args.command == "infer":
                return _infer(args)
            raise InvalidInputError(f"unknown command {args.command!r}")
    except LatentSyncError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated as stop:
        print(f"error: stopped by {signal.Signals(stop.signum).name}; no output written", file=sys.stderr)
        return 128 + stop.signum
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
