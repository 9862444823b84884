"""The overlapped chunk pipeline: same results and order as the sequential run, real overlap, clean failure."""

from __future__ import annotations

import threading
import time

import pytest

from latentsync.pipeline.overlap import run_overlapped


def _stages(n: int, delay: float = 0.0, log: list | None = None):
    log = [] if log is None else log

    def source():
        for i in range(n):
            log.append(("read", i, time.perf_counter()))
            time.sleep(delay)
            yield i

    def process(i):
        log.append(("process", i, time.perf_counter()))
        time.sleep(delay)
        return i * i

    out = []

    def sink(v):
        time.sleep(delay)
        out.append((v, threading.current_thread().name))

    return source(), process, sink, out, log


def test_same_results_in_order_and_stages_in_their_threads():
    src, proc, sink, out, _ = _stages(7)
    assert run_overlapped(src, proc, sink) == 7
    assert [v for v, _ in out] == [i * i for i in range(7)]
    assert {name for _, name in out} == {"latentsync-write"}
    src, proc, sink, seq, _ = _stages(7)
    assert run_overlapped(src, proc, sink, overlap=False) == 7
    assert [v for v, _ in seq] == [v for v, _ in out]


def test_stages_overlap_in_time():
    n, delay = 6, 0.05
    src, proc, sink, out, log = _stages(n, delay)
    t0 = time.perf_counter()
    run_overlapped(src, proc, sink)
    wall = time.perf_counter() - t0
    assert wall < 0.75 * 3 * n * delay  # sequential would be 3 * n * delay
    read_3 = next(t for kind, i, t in log if kind == "read" and i == 3)
    process_2 = next(t for kind, i, t in log if kind == "process" and i == 2)
    assert read_3 < process_2 + delay  # chunk 3 was read while chunk 2 was processed


@pytest.mark.parametrize("where", ["source", "process", "sink"])
def test_failure_in_any_stage_is_raised_after_the_threads_end(where):
    closed = []

    def source():
        try:
            for i in range(100):
                if where == "source" and i == 3:
                    raise RuntimeError("boom in source")
                yield i
        finally:
            closed.append(True)

    def process(i):
        if where == "process" and i == 3:
            raise KeyboardInterrupt  # e.g. a cancel from the progress callback
        return i

    def sink(i):
        if where == "sink" and i == 3:
            raise RuntimeError("boom in sink")

    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt if where == "process" else RuntimeError):
        run_overlapped(source(), process, sink)
    assert threading.active_count() == before and closed == [True]


def test_bad_depth():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        run_overlapped([], lambda x: x, lambda x: None, depth=0)
