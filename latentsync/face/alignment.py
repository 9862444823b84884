"""Face alignment geometry: crop template, similarity transform, temporal smoothing (spec 1.7).

Pure numpy, no image data: arrays in, arrays out, state passed explicitly or held in small objects.

Coordinates are pixels ``(x, y)``; a 2x3 ``affine_matrix`` maps homogeneous frame pixels to crop
pixels (``crop = M @ [x, y, 1]``), the convention of ``kornia.geometry.transform.warp_affine``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from latentsync.errors import InvalidInputError

SUPPORTED_RESOLUTIONS = (256, 512)

# Anchor points in a 75 x 100 reference box (spec 1.7): image-left brow, image-right brow, nose.
_TEMPLATE_UNIT = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]], dtype=np.float64)
_BOX_UNIT = (75, 100)  # (W, H)

# Weight of the previous bias in the official translation "bias" smoothing (spec 1.7).
_BIAS_MEMORY = 0.2


def check_resolution(resolution: object, name: str = "resolution") -> int:
    """Return ``resolution`` as int if it is 256 or 512.

    Raises:
        InvalidInputError: naming ``name`` when the value is anything else.
    """
    is_int = isinstance(resolution, (int, np.integer)) and not isinstance(resolution, bool)
    if not is_int or int(resolution) not in SUPPORTED_RESOLUTIONS:
        raise InvalidInputError(
            f"{name}: expected one of {SUPPORTED_RESOLUTIONS} (face crop size in pixels), got {resolution!r}"
        )
    return int(resolution)


def template_ratio(resolution: int) -> float:
    """Scale of the 75 x 100 reference box: ``resolution / 256 * 2.8`` (2.8 at 256, 5.6 at 512)."""
    return check_resolution(resolution) / 256 * 2.8


def face_template(resolution: int) -> np.ndarray:
    """The three anchor positions in crop pixels, float64 ``[3, 2]`` (x, y): brow-L, brow-R, nose.

    256: ``[[47.6, 56], [162.4, 56], [105, 112]]``; 512: twice that (spec 1.7).
    """
    return _TEMPLATE_UNIT * template_ratio(resolution)


def crop_size(resolution: int) -> tuple[int, int]:
    """``(W, H)`` of the crop before it is resized to ``resolution``: (210, 280) or (420, 560)."""
    ratio = template_ratio(resolution)
    return int(_BOX_UNIT[0] * ratio), int(_BOX_UNIT[1] * ratio)


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.shape != (3, 2) or not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{name}: expected 3 finite (x, y) points, shape (3, 2); got shape {arr.shape}")
    return arr


def similarity_transform(
    landmarks3: np.ndarray,
    template: np.ndarray,
    prev_bias: np.ndarray | None = None,
    use_bias: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity transform (rotation, uniform scale, translation) taking ``landmarks3`` to ``template``.

    Umeyama/Procrustes as in spec 1.7: both point sets are centred and divided by their own standard
    deviation (unbiased, over all 6 coordinates); ``R = V Uᵀ`` from the SVD ``P1ᵀ P2 = U S Vᵀ`` (a
    reflection is turned into a rotation by negating V's last column); ``s = std2 / std1``;
    ``M = [s R | c2 - s R c1]``.

    The official "bias" smoothing is then applied to the translation: ``bias = P2[nose] - P1[nose]``
    in the *normalised* coordinates, blended with the previous frame's bias as
    ``0.2 * prev_bias + 0.8 * bias`` when one is given, and added to ``M[:, 2]`` (a sub-pixel shift).

    Args:
        landmarks3: ``[3, 2]`` frame pixels (brow-L, brow-R, nose), any float dtype.
        template: ``[3, 2]`` crop pixels, e.g. :func:`face_template`.
        prev_bias: float64 ``[2]`` bias returned for the previous frame of the same face track, or
            None for the first frame (or after a gap).
        use_bias: False returns the plain least-squares similarity (bias = zeros, not added).

    Returns:
        ``(affine_matrix, bias)``: float64 ``[2, 3]`` mapping frame -> crop pixels, and the float64
        ``[2]`` bias to pass as ``prev_bias`` for the next frame.

    Raises:
        InvalidInputError: wrong shape, non-finite values or coincident landmarks.
    """
    p1 = _check_points(landmarks3, "landmarks3")
    p2 = _check_points(template, "template")
    c1, c2 = p1.mean(axis=0), p2.mean(axis=0)
    s1, s2 = (p1 - c1).std(ddof=1), (p2 - c2).std(ddof=1)
    if s1 < 1e-9 or s2 < 1e-9:
        raise InvalidInputError(f"landmarks3: the three points coincide ({p1.tolist()}); no transform exists")
    n1, n2 = (p1 - c1) / s1, (p2 - c2) / s2
    u, _, vt = np.linalg.svd(n1.T @ n2)
    v = vt.T
    rot = v @ u.T
    if np.linalg.det(rot) < 0:
        v[:, -1] = -v[:, -1]
        rot = v @ u.T
    scale = s2 / s1
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = c2 - scale * rot @ c1
    if not use_bias:
        return matrix, np.zeros(2, dtype=np.float64)
    bias = n2[2] - n1[2]
    if prev_bias is not None:
        bias = _BIAS_MEMORY * np.asarray(prev_bias, dtype=np.float64) + (1.0 - _BIAS_MEMORY) * bias
    matrix[:, 2] += bias
    return matrix, bias


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (or a batch ``[..., 2, 3]``), float64, same layout."""
    m = np.asarray(matrix, dtype=np.float64)
    a = m[..., :2]
    inv_a = np.linalg.inv(a)
    t = -(inv_a @ m[..., 2:3])
    return np.concatenate([inv_a, t], axis=-1)


def crop_bbox_in_frame(matrices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frame-pixel bounding box of the crop rectangle for each matrix.

    Args:
        matrices: ``[N, 2, 3]`` frame -> crop matrices.
        size: ``(W, H)`` of the crop.

    Returns:
        float64 ``[N, 4]`` ``(x0, y0, x1, y1)``: extent of the crop's pixel centres ``[0, W-1] x
        [0, H-1]`` mapped into the frame.
    """
    w, h = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
    inv = invert_affine(np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3))
    pts = np.einsum("nij,kj->nki", inv, corners)  # [N, 4, 2]
    return np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)


@dataclass
class OneEuroSmoother:
    """One-Euro filter of the three anchor points over time (Casiez, Roussel, Vogel, CHI 2012).

    Per anchor point, a first-order low-pass filter whose cutoff rises with the point's speed:
    ``cutoff = min_cutoff + beta * speed``, with ``speed`` the low-passed (``d_cutoff``) velocity in
    face widths per second (face width = distance between the two brow anchors), so the same
    settings work for small and large faces. Still faces get strong smoothing (jitter removed); fast
    head motion raises the cutoff and keeps the lag small.

    Defaults (min_cutoff 1 Hz, beta 20) were chosen on the demo clips with an image measure - the
    frame-to-frame change of the aligned crop above the mouth (brows, eyes, nose) - which they lower
    by 8-12 % against the official rounded anchors and by 3-4 % against unsmoothed sub-pixel ones;
    stronger smoothing (beta 2) lags a talking head and makes it worse (bench_face_smoothing.py).

    The state is reset (next sample passes through unchanged) by :meth:`reset` - the aligner calls it
    after frames without a face and at non-contiguous chunk starts - and automatically when a
    point moves more than ``jump_reset`` face widths in one frame (a cut or a different face).

    Attributes:
        fps: sample rate in frames per second (Hz).
        min_cutoff: cutoff frequency (Hz) for a still face.
        beta: cutoff increase (Hz) per face width per second of speed.
        d_cutoff: cutoff frequency (Hz) of the speed estimate.
        jump_reset: displacement (face widths, one frame) above which the filter restarts.
    """

    fps: float = 25.0
    min_cutoff: float = 1.0
    beta: float = 20.0
    d_cutoff: float = 1.0
    jump_reset: float = 0.5

    def __post_init__(self) -> None:
        for name in ("fps", "min_cutoff", "d_cutoff", "jump_reset"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInputError(f"OneEuroSmoother.{name}: expected a positive number, got {value!r}")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise InvalidInputError(f"OneEuroSmoother.beta: expected a number >= 0, got {self.beta!r}")
        self.reset()

    def reset(self) -> None:
        """Forget the history; the next point set is returned unchanged."""
        self._x: np.ndarray | None = None  # last filtered points [3, 2]
        self._dx: np.ndarray | None = None  # last filtered velocity [3, 2], px per second

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
        return 1.0 / (1.0 + tau * self.fps)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Filter one frame's anchor points.

        Args:
            points: ``[3, 2]`` frame pixels (brow-L, brow-R, nose) of the current frame.

        Returns:
            float64 ``[3, 2]`` smoothed points.
        """
        x = _check_points(points, "points")
        width = max(float(np.linalg.norm(x[1] - x[0])), 1.0)
        if self._x is not None and np.max(np.linalg.norm(x - self._x, axis=1)) > self.jump_reset * width:
            self.reset()
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self._x) * self.fps
        self._dx = self._dx + self._alpha(self.d_cutoff) * (dx - self._dx)
        speed = np.linalg.norm(self._dx, axis=1, keepdims=True) / width  # face widths per second
        alpha = self._alpha(self.min_cutoff + self.beta * speed)
        self._x = self._x + alpha * (x - self._x)
        return self._x.copy()
