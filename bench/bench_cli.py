"""Benchmark of the CLI: frames per second and peak resident memory per clip, as JSON.

Runs ``python -m latentsync infer --tiny-random`` in a child process for each clip (the 10 s demo1
and the 20 s demo2 from ../shared/media by default) and reads the child's own ``ru_maxrss`` with
``os.wait4`` (exact per child, unlike ``RUSAGE_CHILDREN`` which keeps the maximum over all children).
The pipeline streams, so the peak of the 20 s clip must stay within 15 % of the 10 s one
(``rss_ratio`` / ``rss_within_15pct`` in the output).

Usage::

    .venv/bin/python bench/bench_cli.py [--steps 2] [--guidance-scale 1.5] [--deepcache] [--parallel]
        [--clips demo1 demo2] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("LATENTSYNC_SHARED_DIR", REPO.parent / "shared")) / "media"


def _start(clip: str, out_dir: Path, args) -> tuple[subprocess.Popen, dict]:
    video, audio = MEDIA / f"{clip}_video.mp4", MEDIA / f"{clip}_audio.wav"
    out = out_dir / f"{clip}_synced.mp4"
    cmd = [sys.executable, "-m", "latentsync", "infer", "--video", str(video), "--audio", str(audio),
           "--output", str(out), "--tiny-random", "--resolution", "256", "--steps", str(args.steps),
           "--guidance-scale", str(args.guidance_scale), "--device", args.device, "--quiet"]
    if args.deepcache:
        cmd.append("--deepcache")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(args.threads))
    log = open(out_dir / f"{clip}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, {"clip": clip, "video": str(video), "audio": str(audio), "output": out, "log": log,
                  "t0": time.perf_counter()}


def _finish(proc: subprocess.Popen, meta: dict) -> dict:
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - meta["t0"]
    meta["log"].close()
    result = {"clip": meta["clip"], "exit_code": proc.returncode, "wall_s": round(wall, 2),
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # Linux: kilobytes
    if proc.returncode == 0:
        import av

        with av.open(str(meta["output"])) as c:
            s = c.streams.video[0]
            frames = s.frames or sum(1 for _ in c.demux(s) if _.size)
            result.update(frames=int(frames), fps_out=float(s.average_rate),
                          frames_per_s=round(frames / wall, 3), size=f"{s.width}x{s.height}")
    else:
        result["log_tail"] = Path(meta["log"].name).read_text()[-2000:]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", nargs="+", default=["demo1", "demo2"])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--guidance-scale", type=float, default=1.5)
    p.add_argument("--deepcache", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parallel", action="store_true", help="run the clips at the same time (shared CPU)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        tmp = Path(tmp)
        results = []
        if args.parallel:
            running = [_start(c, tmp, args) for c in args.clips]
            results = [_finish(proc, meta) for proc, meta in running]
        else:
            for c in args.clips:
                results.append(_finish(*_start(c, tmp, args)))
    report = {
        "settings": {"steps": args.steps, "guidance_scale": args.guidance_scale, "deepcache": args.deepcache,
                     "resolution": 256, "tiny_random": True, "threads": args.threads, "parallel": args.parallel,
                     "device": args.device, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                     "load_avg_end": os.getloadavg()},
        "results": results,
    }
    rss = {r["clip"]: r["peak_rss_mb"] for r in results if r["exit_code"] == 0}
    if "demo1" in rss and "demo2" in rss:
        report["rss_ratio_demo2_over_demo1"] = round(rss["demo2"] / rss["demo1"], 4)
        report["rss_within_15pct"] = abs(rss["demo2"] / rss["demo1"] - 1) <= 0.15
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
