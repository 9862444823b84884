"""Frame spill files and output segments: the plumbing that lets a looped timeline stream (spec 1.6).

The reversed passes of a ping-pong loop need earlier frames again. Instead of keeping the video in
memory or re-decoding backwards (HEVC seeks to a key frame and decodes forward, quadratic for long
GOPs), the first forward pass **spills** every decoded frame (and, for the pipeline, its aligned
face) to raw uint8 files in a temporary folder; later passes read the rows they need back with
ordinary file reads (not ``mmap``: pages read through ``read`` stay in the OS page cache and never
count toward the process's resident memory). Only small per-frame data stay in memory: affine
matrices (24 bytes) and a no-face flag. Disk use when looping: ``n_video * (H * W * 3 + R * R * 3)``
bytes (about 6.4 MB per 1080x1920 frame at R = 256).

* :class:`RowSpill` one raw file of fixed-size uint8 rows (frames, faces), appended, read by index;
* :class:`FrameSpill` the frames + faces + matrices of a video's forward pass (the CLI loop);
* :class:`SpilledFaceCrops` / :func:`collect_crops` the face crops of a whole video kept in a file
  past :data:`SPILL_BYTES` (what travels between the ComfyUI nodes for a long video);
* :func:`take_frames` the first n frames of a chunked stream;
* :func:`source_segments` decoded (or spilled) frames + aligned faces for each run of output frames;
* :func:`output_chunks` regroups those runs into the official 16-frame output chunks.
"""

from __future__ import annotations

import os
import uuid
import weakref
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import torch

from latentsync.errors import InvalidInputError
from latentsync.types import FaceCrops


class RowSpill:
    """Fixed-shape uint8 rows in a raw file: ``append`` in order, ``read`` any rows back.

    Args:
        path: file to create (truncated); removed by :meth:`close` when ``remove`` is True.
        row_shape: shape of one row, e.g. ``(H, W, 3)``.
        remove: delete the file on :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, row_shape: tuple[int, ...], remove: bool = True):
        self.path = Path(path)
        self.row_shape = tuple(int(s) for s in row_shape)
        self.row_bytes = int(np.prod(self.row_shape))
        self.count = 0
        self.remove = remove
        self._fh: BinaryIO | None = open(self.path, "w+b")

    def append(self, rows: np.ndarray | torch.Tensor) -> None:
        """Append uint8 rows ``[k, *row_shape]``."""
        arr = np.ascontiguousarray(torch.as_tensor(rows).numpy() if isinstance(rows, torch.Tensor) else rows)
        if arr.dtype != np.uint8 or tuple(arr.shape[1:]) != self.row_shape:
            raise InvalidInputError(
                f"RowSpill.append: expected uint8 rows [k, {', '.join(map(str, self.row_shape))}], "
                f"got {arr.dtype} {tuple(arr.shape)}"
            )
        self._fh.seek(self.count * self.row_bytes)
        self._fh.write(arr.tobytes())
        self.count += arr.shape[0]

    def read(self, index: Iterable[int] | np.ndarray) -> np.ndarray:
        """uint8 ``[len(index), *row_shape]`` of the rows ``index`` (each in ``0..count-1``)."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            raise IndexError(f"RowSpill.read: rows {idx.min()}..{idx.max()} outside 0..{self.count - 1}")
        self._fh.flush()
        out = np.empty((len(idx), *self.row_shape), dtype=np.uint8)
        j = 0
        while j < len(idx):  # consecutive rows are read with one call
            k = j + 1
            while k < len(idx) and idx[k] == idx[k - 1] + 1:
                k += 1
            self._fh.seek(int(idx[j]) * self.row_bytes)
            self._fh.readinto(memoryview(out[j:k]).cast("B"))
            j = k
        return out

    def close(self) -> None:
        """Close (and remove) the file; safe to call twice."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            if self.remove:
                self.path.unlink(missing_ok=True)


class FrameSpill:
    """Every source frame of a forward pass with its aligned face and matrix (looping only).

    Args:
        folder: where the two raw files go (``frames.u8``, ``faces.u8``).
        n: number of source frames.
        frame_shape: ``(H, W, 3)``; face_shape: ``(R, R, 3)``.
    """

    def __init__(self, folder: Path, n: int, frame_shape: tuple[int, ...], face_shape: tuple[int, ...]):
        self.frames = RowSpill(Path(folder) / "frames.u8", frame_shape)
        self.faces = RowSpill(Path(folder) / "faces.u8", face_shape)
        self.matrices = np.zeros((n, 2, 3), dtype=np.float32)
        self.has_face = np.zeros(n, dtype=bool)

    @property
    def count(self) -> int:
        return self.frames.count

    def append(self, frames: np.ndarray, crops: FaceCrops) -> None:
        """Append decoded frames ``[k, H, W, 3]`` and their crops (``crops.start_index`` = count)."""
        k, start = frames.shape[0], self.count
        self.frames.append(frames)
        self.faces.append(crops.faces)
        self.matrices[start : start + k] = torch.as_tensor(crops.affine_matrices).numpy()
        missing = set(crops.no_face_indices)
        self.has_face[start : start + k] = [crops.start_index + i not in missing for i in range(k)]

    def read(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``[k, H, W, 3]`` and faces ``[k, R, R, 3]`` of the source indices ``index``."""
        return self.frames.read(index), self.faces.read(index)

    def close(self) -> None:
        self.frames.close()
        self.faces.close()


SPILL_BYTES = 64 * 2**20
"""Face crops of a whole video above this many bytes go to a file (:func:`collect_crops`)."""


class SpilledFaceCrops:
    """Face crops of a whole video with the faces in a raw file; reads rows on demand.

    Offers what the stages use of :class:`~latentsync.types.FaceCrops` (``len``, :meth:`select`, the
    metadata fields); the matrices (24 bytes a frame) stay in memory. The file is removed when the
    object is garbage collected (ComfyUI may keep a node output cached for later runs).

    Attributes:
        faces_file: the :class:`RowSpill` of uint8 ``[R, R, 3]`` faces.
        affine_matrices: float32 ``[N, 2, 3]``; crop_size, mask, frame_size, resolution,
            no_face_indices, start_index: as in ``FaceCrops`` (``start_index`` 0).
    """

    def __init__(self, faces_file: RowSpill, affine_matrices: torch.Tensor, first: FaceCrops, no_face: list[int]):
        self.faces_file = faces_file
        self.affine_matrices = affine_matrices
        self.crop_size, self.mask = first.crop_size, first.mask
        self.frame_size, self.resolution = first.frame_size, first.resolution
        self.no_face_indices = no_face
        self.start_index = 0
        self._finalizer = weakref.finalize(self, faces_file.close)

    def __len__(self) -> int:
        return int(self.affine_matrices.shape[0])

    def select(self, indices) -> FaceCrops:
        """In-memory ``FaceCrops`` of the rows ``indices`` (as :meth:`FaceCrops.select`)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        missing = set(self.no_face_indices)
        return FaceCrops(
            faces=torch.from_numpy(self.faces_file.read(idx)),
            affine_matrices=self.affine_matrices[torch.from_numpy(idx)],
            crop_size=self.crop_size, mask=self.mask, frame_size=self.frame_size, resolution=self.resolution,
            no_face_indices=[j for j, i in enumerate(idx.tolist()) if i in missing],
            start_index=0,
        )


def collect_crops(parts: Iterable[FaceCrops], folder: str | os.PathLike, limit: int | None = None):
    """Join the per-chunk crops of a whole video: in memory up to ``limit`` bytes of faces, else a file.

    Args:
        parts: crops of consecutive chunks, in order, starting at frame 0.
        folder: where the faces file goes (ComfyUI's temp folder); the file is removed if this
            fails or is interrupted, and when the result is garbage collected.
        limit: bytes of faces kept in memory at most (default :data:`SPILL_BYTES`).

    Returns:
        :class:`~latentsync.types.FaceCrops` (short videos) or :class:`SpilledFaceCrops`.
    """
    limit = SPILL_BYTES if limit is None else int(limit)
    held: list[FaceCrops] = []
    size = 0
    spill: RowSpill | None = None
    matrices: list[torch.Tensor] = []
    no_face: list[int] = []
    first: FaceCrops | None = None
    try:
        for part in parts:
            first = first or part
            if spill is None:
                held.append(part)
                size += part.faces.numel()
                if size <= limit:
                    continue
                spill = RowSpill(Path(folder) / f"faces-{uuid.uuid4().hex[:12]}.u8", tuple(part.faces.shape[1:]))
                todo, held = held, []
            else:
                todo = [part]
            for p in todo:
                spill.append(p.faces)
                matrices.append(torch.as_tensor(p.affine_matrices))
                no_face.extend(p.no_face_indices)
    except BaseException:
        if spill is not None:
            spill.close()
        raise
    if spill is None:
        return FaceCrops.concat(held)
    return SpilledFaceCrops(spill, torch.cat(matrices), first, sorted(no_face))


def chunk_starts(num_frames: int, chunk: int) -> range:
    """First output index of each chunk: ``0, chunk, 2 chunk, ...`` (the official cut, spec 1.10)."""
    return range(0, int(num_frames), int(chunk))


def take_frames(frame_chunks: Iterable[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The first ``n`` frames of a chunked frame stream (the last chunk cut short); stops reading there."""
    pos = 0
    if n <= 0:
        return
    for frames in frame_chunks:
        frames = frames[: n - pos]
        pos += int(frames.shape[0])
        yield frames
        if pos >= n:
            return


def source_segments(
    aligned: Iterable[tuple[np.ndarray, FaceCrops]],
    frame_indices: np.ndarray,
    num_video_frames: int,
    spill_dir: Path | None,
    chunk: int,
    what: str = "video",
) -> Iterator[tuple[np.ndarray, FaceCrops]]:
    """Yield ``(frames uint8 [n, H, W, 3], crops)`` for consecutive runs of output frames.

    Output frame ``k`` shows source frame ``frame_indices[k]`` (:func:`~latentsync.video.timeline.
    loop_indices`). The first ``min(n_out, n_video)`` outputs are the source in order, as ``aligned``
    gives them; when the plan loops they are spilled to ``spill_dir`` and the rest is read back from
    the spill (faces of looped frames are reused from the first pass, as the official code aligns
    once and loops the aligned faces and matrices). ``crops.start_index`` is the output index.
    Segments never cross a multiple of ``chunk`` (see :func:`output_chunks`).

    Args:
        aligned: ``(frames, crops)`` of the source's first ``min(n_out, n_video)`` frames in order
            (e.g. :func:`latentsync.pipeline.stages.align_chunks` over :func:`take_frames`), chunks
            of at most ``chunk`` frames.
        frame_indices: int64 ``[n_out]`` source frame of each output frame.
        num_video_frames: source frames expected.
        spill_dir: folder for the spill files (only used when looping).
        chunk: output chunk size (16).
        what: the input named in errors.

    Raises:
        InvalidInputError: the source ends before ``min(n_out, num_video_frames)`` frames.
    """
    n_out = len(frame_indices)
    n_forward = min(n_out, num_video_frames)
    looped = n_out > num_video_frames
    spill: FrameSpill | None = None
    pos = 0
    crops = None
    try:
        for frames, crops in aligned:
            if looped:
                if spill is None:
                    spill = FrameSpill(spill_dir, num_video_frames, frames.shape[1:], crops.faces.shape[1:])
                spill.append(frames, crops)
            yield frames, crops
            pos += frames.shape[0]
        if pos < n_forward:
            raise InvalidInputError(
                f"{what}: decoding stopped after {pos} frames but the file declares {num_video_frames} "
                f"(truncated or damaged file)"
            )
        while pos < n_out:
            idx = frame_indices[pos : min(n_out, (pos // chunk + 1) * chunk)]
            frames, faces = spill.read(idx)
            yield frames, FaceCrops(
                faces=torch.from_numpy(faces),
                affine_matrices=torch.from_numpy(spill.matrices[idx].copy()),
                crop_size=crops.crop_size,
                mask=crops.mask,
                frame_size=tuple(frames.shape[1:3]),
                resolution=crops.resolution,
                no_face_indices=[pos + j for j, i in enumerate(idx.tolist()) if not spill.has_face[i]],
                start_index=pos,
            )
            pos += len(idx)
    finally:
        if spill is not None:
            spill.close()


def output_chunks(
    segments: Iterable[tuple[np.ndarray, FaceCrops]], chunk: int
) -> Iterator[tuple[np.ndarray, FaceCrops]]:
    """Regroup segments into output chunks ``[16k, 16k + 16)`` as the official loop cuts them.

    The official pipeline loops the video first and then cuts the output frames into chunks of 16;
    here the forward pass and the looped passes arrive as separate segments, so the chunk that
    spans the turn is assembled from two of them.

    Raises:
        AssertionError: a segment crosses a chunk boundary (a bug of the producer).
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
            yield _join(frames_parts), FaceCrops.concat(crops_parts)
            frames_parts, crops_parts, have = [], [], 0
    if have:
        yield _join(frames_parts), FaceCrops.concat(crops_parts)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
