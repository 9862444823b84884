"""Three-stage chunk pipeline: read ahead, process, write behind (threads and two small queues).

The lip-sync job per chunk is ``source`` (decode + face alignment) -> ``process`` (VAE encode,
denoise, VAE decode: the accelerator's work) -> ``sink`` (paste-back + video encode). Run one after the
other, the accelerator idles while the CPU decodes, aligns, pastes and encodes. Here the source runs in
a reader thread (chunk k+1 is decoded and aligned while chunk k is denoised), the sink in a writer
thread (chunk k-1 is pasted and encoded meanwhile) and ``process`` in the calling thread. PyAV,
mediapipe, OpenCV and torch release the GIL for their heavy work, so the threads really overlap.

Same output as the sequential job, by construction: every stage runs in exactly one thread and sees
the chunks in order (FIFO queues), and stateful parts stay inside one stage (the face tracker and its
smoothing in the source, the seeded generator in ``process``, the encoder in the sink). Memory is
bounded: at most ``depth`` chunks wait between two stages (plus one in each stage).

Errors and interrupts: an exception in any stage (including ``KeyboardInterrupt`` or a cancel raised
by a progress callback in ``process``) stops the other two and is re-raised in the calling thread
after both threads have ended; nothing keeps running in the background.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
U = TypeVar("U")

_END = object()
_POLL_S = 0.1


class _Stop(Exception):
    """Raised inside a worker when another stage failed."""


def run_overlapped(
    source: Iterable[T],
    process: Callable[[T], U],
    sink: Callable[[U], None],
    overlap: bool = True,
    depth: int = 1,
) -> int:
    """Run ``sink(process(item))`` for every item of ``source``, in order, the three stages overlapped.

    Args:
        source: iterable of chunks; iterated in a reader thread (``overlap``) or inline.
        process: called in the calling thread, one chunk at a time, in order.
        sink: called in a writer thread (``overlap``) or inline, with ``process``' results in order.
        overlap: False runs everything inline, one stage after the other (the reference behaviour).
        depth: chunks allowed to wait between two stages (>= 1).

    Returns:
        The number of chunks processed.

    Raises:
        Whatever a stage raised (the first failure; the other stages are stopped and joined first).
        ValueError: ``depth < 1``.
    """
    if depth < 1:
        raise ValueError(f"run_overlapped: depth must be >= 1, got {depth}")
    if not overlap:
        n = 0
        try:
            for item in source:
                sink(process(item))
                n += 1
        finally:
            _close(source)
        return n

    stop = threading.Event()
    errors: list[BaseException] = []
    inbox: queue.Queue = queue.Queue(maxsize=depth)
    outbox: queue.Queue = queue.Queue(maxsize=depth)

    def put(q: queue.Queue, item) -> None:
        while True:
            if stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(q: queue.Queue):
        while True:
            if stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def fail(err: BaseException) -> None:
        if not isinstance(err, _Stop):
            errors.append(err)
        stop.set()

    def read() -> None:
        try:
            for item in source:
                put(inbox, item)
            put(inbox, _END)
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            fail(err)
        finally:
            _close(source)  # a generator's clean-up (its finally blocks) runs in the thread that used it

    def write() -> None:
        try:
            while (result := get(outbox)) is not _END:
                sink(result)
        except BaseException as err:  # noqa: BLE001
            fail(err)

    reader = threading.Thread(target=read, name="latentsync-read", daemon=True)
    writer = threading.Thread(target=write, name="latentsync-write", daemon=True)
    reader.start()
    writer.start()
    n = 0
    try:
        while (item := get(inbox)) is not _END:
            put(outbox, process(item))
            n += 1
        put(outbox, _END)
    except BaseException as err:  # noqa: BLE001
        fail(err)
    finally:
        if not stop.is_set():
            writer.join()  # success: let the writer drain the last chunks
        stop.set()
        reader.join()
        writer.join()
    if errors:
        raise errors[0]
    return n


def _close(source) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()
