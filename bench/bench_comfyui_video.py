"""Benchmark of the VIDEO workflow through a real ComfyUI server: success, frames, fps, peak RSS, as JSON.

For each length (default 4 s and 16 s) a 1080x1920 cut of the shared demo2 clip and the same length of
its dubbing speech (demo2_audio.wav) go through ``workflows/api/latentsync_video.json`` (LoadVideo ->
stage nodes -> SaveVideo) on a fresh ComfyUI server (the harness's ``.comfyui/``, CPU, tiny random
weights, 256 px faces, 1 step by default). The server process's peak RSS is sampled every 0.2 s. The
streaming path must keep it flat: ``rss_ratio`` = peak(longest) / peak(shortest) within 15 % and the
longest under 4 GiB (``rss_within_15pct``, ``rss_under_4gib``). The frame count and fps are checked
against the CLI's timeline rule (``latentsync.video.timeline.plan_output``) and, with ``--cli``, against
a CLI run on the shortest clip. ``--image-seconds N`` also runs the IMAGE workflow
(``latentsync_core.json``, which holds float32 frames: only short clips) and reports its peak RSS and
the per-frame max abs difference from the VIDEO workflow (``frame_differences`` of the e2e tests).
``--loop-seconds 60`` adds a 60 s speech over the 20 s demo2 video (ping-pong loop). Servers are
started on 127.0.0.1 and stopped at the end.

Usage::

    .venv/bin/python bench/bench_comfyui_video.py [--seconds 4 16] [--image-seconds 4] [--cli]
        [--loop-seconds 60] [--steps 1] [--guidance-scale 1.5] [--parallel] [--out bench/comfyui_video.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import test_comfyui_e2e as e2e  # noqa: E402  (the real-server harness of the slow tests)

MEDIA = e2e.MEDIA
SAMPLE_RATE = 16000


def make_clip(folder: Path, seconds: float, loop_audio_s: float | None = None) -> tuple[str, str]:
    """``demo2_<s>s.mp4`` (the first ``seconds`` of demo2, 1080x1920) and the speech WAV beside it."""
    import soundfile as sf

    from latentsync.video.io import VideoWriter, iter_frames, probe_video, read_audio

    src = MEDIA / "demo2_video.mp4"
    info = probe_video(src)
    n = min(info.num_frames, int(round(seconds * info.fps)))
    name = f"demo2_{seconds:g}s" + (f"_loop{loop_audio_s:g}s" if loop_audio_s else "")
    with VideoWriter(folder / f"{name}.mp4", info.fps, info.width, info.height, preset="ultrafast") as w:
        for chunk in iter_frames(src):
            w.write(chunk[: n - w.num_frames])
            if w.num_frames >= n:
                break
    speech = read_audio(MEDIA / "demo2_audio.wav", SAMPLE_RATE)
    want = int((loop_audio_s or seconds) * SAMPLE_RATE)
    while len(speech) < want:  # a longer speech: the demo speech again
        import numpy as np

        speech = np.concatenate([speech, speech])
    sf.write(folder / f"{name}.wav", speech[:want], SAMPLE_RATE, subtype="PCM_16")
    return f"{name}.mp4", f"{name}.wav"


def run_one(kind: str, video: str, audio: str, steps: int, guidance_scale: float, root: Path, timeout: float) -> dict:
    """One workflow on a fresh server; returns success, frames, fps, peak RSS, wall time."""
    from safetensors.torch import save_file

    from latentsync.models.tiny import write_tiny_checkpoint_dir
    from latentsync.video.io import probe_video, read_audio
    from latentsync.video.timeline import plan_output

    write_tiny_checkpoint_dir(root / "models" / "latentsync")
    (root / "models" / "vae").mkdir(parents=True, exist_ok=True)
    save_file(e2e._taesd_state_dict(), str(root / "models" / "vae" / e2e.TINY_VAE))
    srv = e2e.Server(root)
    srv.start()
    try:
        if kind == "video":
            prompt = e2e._video_prompt(video, audio, steps=steps, prefix=f"bench/{Path(video).stem}")
        else:
            prompt = e2e._core_prompt(video, audio, steps=steps)
            paste = next(k for k, v in prompt.items() if v["class_type"] == "LatentSyncPasteBackFaces")
            prompt["100"] = {"class_type": "SaveImage", "inputs": {"images": [paste, 0], "filename_prefix": "bench/frames"}}
        sampler = next(k for k, v in prompt.items() if v["class_type"] == "LatentSyncSampler")
        prompt[sampler]["inputs"]["guidance_scale"] = guidance_scale
        idle_rss = srv.peak_rss
        srv.reset_peak()
        t0 = time.perf_counter()
        hist = srv.run(prompt, timeout=timeout)
        wall = time.perf_counter() - t0
        ok = hist["status"]["status_str"] == "success"
        res = {"workflow": kind, "video": video, "audio": audio, "success": ok, "wall_s": round(wall, 1),
               "peak_rss_gib": round(srv.peak_rss / 2**30, 3), "idle_rss_gib": round(idle_rss / 2**30, 3)}
        if not ok:
            res["error"] = e2e._error_message(hist)
            return res
        out = e2e._output_video(root, hist)
        info_in, info = probe_video(root / "input" / video), probe_video(out)
        plan = plan_output(info_in.num_frames, len(read_audio(root / "input" / audio)), info_in.fps)
        res.update(output=str(out), frames=info.num_frames, fps=info.fps, size=[info.width, info.height],
                   input_frames=info_in.num_frames, input_fps=info_in.fps, cli_plan_frames=plan.num_frames,
                   looped=plan.looped, audio_samples_16k=len(read_audio(out)), cli_plan_audio_samples=plan.num_audio_samples)
        if kind == "image":
            res["saved_frames"] = str(root / "frames.npy")
            import numpy as np

            np.save(root / "frames.npy", e2e._saved_images(root, hist, "100"))
        leftovers = [p.name for p in (root / "temp").rglob("*") if p.is_file() and not p.name.startswith("latentsync_")]
        res["temp_leftovers"] = leftovers
        return res
    finally:
        srv.stop()


def run_cli(video: Path, audio: Path, out: Path, steps: int) -> dict:
    cmd = [sys.executable, "-m", "latentsync", "infer", "--video", str(video), "--audio", str(audio), "--output",
           str(out), "--tiny-random", "--resolution", "256", "--steps", str(steps), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    from latentsync.video.io import probe_video

    res = {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode == 0:
        info = probe_video(out)
        res.update(output=str(out), frames=info.num_frames, fps=info.fps)
    else:
        res["stderr_tail"] = proc.stderr[-1500:]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[4, 16])
    ap.add_argument("--image-seconds", type=float, default=None)
    ap.add_argument("--loop-seconds", type=float, default=None, help="speech length over the 20 s demo2 (loop)")
    ap.add_argument("--cli", action="store_true", help="also run the CLI on the shortest clip")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--guidance-scale", type=float, default=1.5)
    ap.add_argument("--parallel", action="store_true", help="run the servers at the same time")
    ap.add_argument("--timeout", type=float, default=5400)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (e2e.COMFY_DIR / "main.py").is_file() or not (MEDIA / "demo2_video.mp4").is_file():
        print(json.dumps({"error": f"needs {e2e.COMFY_DIR} (tools/comfyui_harness.sh --build) and {MEDIA}"}))
        return 2
    link = e2e.COMFY_DIR / "custom_nodes" / "ComfyUI-LatentSync"
    if not link.exists():
        link.symlink_to(REPO)

    with tempfile.TemporaryDirectory(prefix="bench-comfyui-") as tmp:
        tmp = Path(tmp)
        jobs = []
        for s in args.seconds:
            jobs.append(("video", s, None))
        if args.loop_seconds:
            jobs.append(("video", 20.08, args.loop_seconds))
        if args.image_seconds:
            jobs.append(("image", args.image_seconds, None))
        results: list[dict] = [None] * len(jobs)
        cli: dict = {}

        def work(i: int, kind: str, s: float, loop: float | None) -> None:
            root = tmp / f"run{i}"
            (root / "input").mkdir(parents=True)
            video, audio = make_clip(root / "input", s, loop)
            results[i] = {"seconds": s, **run_one(kind, video, audio, args.steps, args.guidance_scale, root, args.timeout)}

        def cli_work() -> None:
            root = tmp / "cli"
            root.mkdir()
            video, audio = make_clip(root, min(args.seconds))
            cli.update(seconds=min(args.seconds), **run_cli(root / video, root / audio, root / "cli.mp4", args.steps))

        threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
        if args.cli:
            threads.append(threading.Thread(target=cli_work))
        for t in threads:
            t.start()
            if not args.parallel:
                t.join()
        for t in threads:
            t.join()

        video_runs = [r for r in results if r and r["workflow"] == "video" and r.get("success") and r["seconds"] in args.seconds]
        report = {"bench": "comfyui_video", "host": platform.node(), "cpus": os.cpu_count(), "steps": args.steps,
              "guidance_scale": args.guidance_scale, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                  "load_avg_end": os.getloadavg(), "runs": results}
        if len(video_runs) >= 2:
            lo, hi = min(video_runs, key=lambda r: r["seconds"]), max(video_runs, key=lambda r: r["seconds"])
            ratio = hi["peak_rss_gib"] / lo["peak_rss_gib"]
            report.update(rss_ratio=round(ratio, 3), rss_within_15pct=ratio <= 1.15, rss_under_4gib=hi["peak_rss_gib"] < 4.0)
        image = next((r for r in results if r and r["workflow"] == "image" and r.get("success")), None)
        same = next((r for r in video_runs if image and r["seconds"] == image["seconds"]), None)
        import numpy as np

        if image and same:
            report["video_vs_image_workflow"] = e2e.frame_differences(Path(same["output"]), np.load(image["saved_frames"]))
        if cli.get("returncode") == 0:
            lo = min(video_runs, key=lambda r: r["seconds"]) if video_runs else None
            report["cli"] = cli
            if lo:
                from latentsync.video.io import iter_frames

                a = np.concatenate(list(iter_frames(cli["output"])))
                b = np.concatenate(list(iter_frames(lo["output"])))
                n = min(len(a), len(b))
                d = np.abs(a[:n].astype(np.int16) - b[:n]).reshape(n, -1).max(1)
                report["video_workflow_vs_cli"] = {
                    "frames_cli": len(a), "frames_video_workflow": len(b), "fps_cli": cli["fps"], "fps_video_workflow": lo["fps"],
                    "max_abs_per_frame_max": int(d.max()), "max_abs_per_frame_median": float(np.median(d)),
                    "note": "different VAEs: the CLI's tiny diffusers VAE vs the server's tiny TAESD"}
        elif cli:
            report["cli"] = cli
        for r in results:
            if r:
                r.pop("saved_frames", None)
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
