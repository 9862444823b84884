"""Data pipeline CLI (spec 4): raw videos -> training clips (aligned faces, 25 fps, 16 kHz).

    python -m training.preprocess.run --input RAW_DIR --output DATA_DIR \\
        [--steps resample,shot,segment,affine,sync,quality] [--resolution 256] \\
        [--syncnet-checkpoint stable_syncnet.pt] [--quality-model scorer.pt]

Steps, in order, each in its own folder under ``--output`` (one module each):

========== ======================= =====================================================
step       folder                  what
========== ======================= =====================================================
resample   resampled/              25 fps video, 16 kHz mono audio; broken inputs -> failed
shot       shot/                   shot boundaries (PySceneDetect if installed, else histogram)
segment    segmented/              5-10 s segments
affine     affine_transformed/     aligned faces at --resolution (every frame needs a face)
sync       av_synced/              StableSyncNet confidence filter + offset correction
quality    high_visual_quality/    pluggable quality scorer (TorchScript), threshold 40
========== ======================= =====================================================

A step whose model is absent (sync, quality) is skipped with a message and the next step reads
the previous folder. Every step keeps ``manifest.jsonl`` (one line per input: ok / filtered / failed
+ reason) and skips inputs already in it, so an interrupted run resumes. Inputs are never modified
or deleted. At the end ``<output>/fileslist.txt`` lists the final clips (paths relative to
``<output>``; usable as ``data.train_fileslist``), and a JSON summary is printed on stdout (also
saved as ``<output>/summary.json``); ``--log`` lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from training.preprocess import affine, quality, resample, segment, shot, sync
from training.preprocess.common import Options, Step, StepSkipped, list_inputs, run_step

STEPS: dict[str, Step] = {
    "resample": Step("resample", resample.FOLDER, resample.process),
    "shot": Step("shot", shot.FOLDER, shot.process),
    "segment": Step("segment", segment.FOLDER, segment.process),
    "affine": Step("affine", affine.FOLDER, affine.process),
    "sync": Step("sync", sync.FOLDER, sync.process, sync.check),
    "quality": Step("quality", quality.FOLDER, quality.process, quality.check),
}
DEFAULT_STEPS = list(STEPS)


def run_pipeline(input_dir: str | os.PathLike, output_dir: str | os.PathLike, steps: Sequence[str] = DEFAULT_STEPS,
                 opts: Options | None = None, verbose: bool = False) -> dict:
    """Run the chosen steps in pipeline order; returns the summary dict (see module docstring).

    Raises:
        latentsync.errors.InvalidInputError: missing input folder, unknown step, or an output
            folder inside the input folder (its clips would be read back as inputs).
    """
    from latentsync.errors import InvalidInputError

    opts = opts or Options()
    src, out = Path(input_dir).resolve(), Path(output_dir).resolve()
    if not src.is_dir():
        raise InvalidInputError(f"--input {str(input_dir)!r}: folder not found")
    if out == src or src in out.parents:
        raise InvalidInputError(f"--output {str(output_dir)!r} is inside --input {str(input_dir)!r}; "
                                "choose a folder outside the input")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise InvalidInputError(f"--steps {unknown}: unknown; expected a subset of {DEFAULT_STEPS}")
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda r: print(json.dumps(r), file=sys.stderr, flush=True)) if verbose else (lambda r: None)
    summary = {"input": str(src), "output": str(out), "steps": [], "skipped_steps": []}
    current = src
    t0 = time.time()
    for name in [s for s in DEFAULT_STEPS if s in steps]:
        step = STEPS[name]
        if step.check is not None:
            try:
                step.check(opts)
            except StepSkipped as exc:
                summary["skipped_steps"].append({"step": name, "reason": str(exc)})
                log({"event": "step_skipped", "step": name, "reason": str(exc)})
                continue
        res = run_step(step, current, out, opts, log)
        summary["steps"].append(res)
        current = Path(res["output_dir"])
    final = [current / p for p in list_inputs(current)] if current != src else []
    (out / "fileslist.txt").write_text("".join(f"{p.relative_to(out).as_posix()}\n" for p in final))
    summary["final_dir"] = str(current)
    summary["num_clips"] = len(final)
    summary["seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.preprocess.run", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="folder of raw .mp4 videos (read only)")
    ap.add_argument("--output", required=True, help="output folder (one sub-folder per step)")
    ap.add_argument("--steps", default=",".join(DEFAULT_STEPS), help=f"comma list from {DEFAULT_STEPS}")
    d = Options()
    for f in fields(Options):
        if f.name == "extra":
            continue
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(d, f.name)), default=getattr(d, f.name))
    ap.add_argument("--log", action="store_true", help="one JSON line per processed item on stderr")
    args = ap.parse_args(argv)
    opts = Options(**{f.name: getattr(args, f.name) for f in fields(Options) if f.name != "extra"})
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    summary = run_pipeline(args.input, args.output, steps, opts, verbose=args.log)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
