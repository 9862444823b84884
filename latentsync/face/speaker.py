"""Which face to lip-sync when there are several (beyond the official code, which takes the first).

Choices (:func:`parse_face_choice`, the CLI's ``--face``):

* ``largest`` (default): the face with the largest box when a track is chosen;
* ``index:N``: the N-th face from the left (0 = leftmost) by box centre;
* ``point:X,Y``: the face whose box centre is nearest to ``(X * W, Y * H)``, X and Y in 0..1;
* ``auto``: the active speaker, the track whose mouth activity best follows the speech's energy
  envelope (:func:`mouth_activity`, :func:`speech_envelope`, correlated over a sliding window
  with a small lag search by :func:`speaker_scores`, then :func:`choose_speaker`). Weight-free;
  needs the whole clip's tracks.

A choice is made once per track, not per frame: the aligner follows the chosen track (see
:mod:`latentsync.face.tracks`) and chooses again only when that track has ended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latentsync.errors import InvalidInputError
from latentsync.face.tracks import FaceTracks

FACE_CHOICE_HELP = (
    "largest (default), auto (the active speaker: mouth motion vs the speech), index:N (0 = leftmost) "
    "or point:X,Y (X, Y in 0..1: the face nearest to that point of the frame)"
)
WINDOW_S = 6.0  # sliding correlation window, seconds (measured: 5-8 s pick the speaker on every test clip, 3-4 s do not)
MAX_LAG_S = 0.12  # lag search range either way, seconds (3 frames at 25 fps)
HIGHPASS_S = 0.4  # moving-mean length removed from both signals (keeps the syllable rate), seconds
SWITCH_MARGIN = 0.15  # correlation margin another track needs to take over
MIN_PRESENT = 0.5  # fraction of a window a track must be present in to get a score


@dataclass(frozen=True)
class FaceChoice:
    """A parsed face choice.

    Attributes:
        mode: "largest", "auto", "index" or "point".
        index: N for "index" (>= 0).
        point: ``(X, Y)`` in 0..1 for "point".
    """

    mode: str = "largest"
    index: int = 0
    point: tuple[float, float] = (0.5, 0.5)

    def __str__(self) -> str:
        if self.mode == "index":
            return f"index:{self.index}"
        if self.mode == "point":
            return f"point:{self.point[0]:g},{self.point[1]:g}"
        return self.mode


def parse_face_choice(text: str | FaceChoice, name: str = "face") -> FaceChoice:
    """Parse ``largest``, ``auto``, ``index:N`` or ``point:X,Y``.

    Raises:
        InvalidInputError: naming ``name``, for anything else (N < 0, X or Y outside 0..1).
    """
    if isinstance(text, FaceChoice):
        return text
    s = str(text).strip().lower()
    if s in ("largest", "auto"):
        return FaceChoice(s)
    kind, _, arg = s.partition(":")
    try:
        if kind == "index" and int(arg) >= 0:
            return FaceChoice("index", index=int(arg))
        if kind == "point":
            x, y = (float(v) for v in arg.split(","))
            if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
                return FaceChoice("point", point=(x, y))
    except ValueError:
        pass
    raise InvalidInputError(f"{name}: expected {FACE_CHOICE_HELP}; got {text!r}")


def pick_face(choice: FaceChoice, boxes: dict[int, np.ndarray], frame_size: tuple[int, int]) -> int | None:
    """The track to follow among the faces of one frame, by a geometric choice.

    Args:
        choice: "largest", "index" or "point" (``auto`` is decided by :func:`choose_speaker`; here it
            falls back to "largest", used while there is no speech evidence).
        boxes: ``{track_id: (x0, y0, x1, y1)}`` of the faces in the frame, pixels.
        frame_size: ``(H, W)``.

    Returns:
        a track id, or None when no face qualifies (no faces, or fewer than N + 1 for "index").
    """
    if not boxes:
        return None
    ids = list(boxes)
    b = np.stack([np.asarray(boxes[t], np.float64) for t in ids])
    centres = (b[:, :2] + b[:, 2:]) / 2
    if choice.mode == "index":
        order = np.argsort(centres[:, 0], kind="stable")
        return ids[int(order[choice.index])] if choice.index < len(ids) else None
    if choice.mode == "point":
        height, width = frame_size
        target = np.array([choice.point[0] * width, choice.point[1] * height])
        return ids[int(np.argmin(np.linalg.norm(centres - target, axis=1)))]
    return ids[int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))]


def _highpass(x: np.ndarray, frames: int) -> np.ndarray:
    """``x`` minus its centred moving mean over ``frames`` (edges padded with the end values)."""
    if frames <= 1:
        return x
    padded = np.pad(x, (frames // 2, frames - 1 - frames // 2), mode="edge")
    return x - np.convolve(padded, np.ones(frames) / frames, mode="valid")


def speech_envelope(waveform: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """Per video frame, the speech's energy envelope in the band that follows the mouth opening.

    The log energy in 1.5-3 kHz (second/third formant region: high when the mouth is open), plus
    1 % of the clip's median energy (silence gives a flat, not a noisy, value), high-passed by
    subtracting its moving mean over ``HIGHPASS_S`` so that only the syllable-rate modulation
    (above ~2.5 Hz) remains: every talking face follows speech-versus-pause at the slow rate, only
    the speaker's mouth follows the syllables. Frame ``n`` (time ``n / fps``) uses a Hann window of
    two frame periods centred on it (zeros past the signal's ends). Measured on the demo clips with
    their own speech (bench/bench_speaker.py): the plain RMS envelope correlates with the speaker's
    lip gap at only -0.4..0.3 (its 80-300 Hz part even anti-correlates: voicing and nasals sound
    with the lips closed); this envelope picks the speaker in every two-person test clip.

    Args:
        waveform: float ``[S]`` mono samples in -1..1.
        sample_rate: Hz (>= 8000 so that 3 kHz is below Nyquist).
        fps: video frame rate, Hz.
        num_frames: frames to cover.

    Returns:
        float64 ``[num_frames]`` (log energy, zero-mean locally; unitless).

    Raises:
        InvalidInputError: ``sample_rate`` below 8000 Hz, or ``fps`` not positive.
    """
    if not sample_rate >= 8000 or not fps > 0:
        raise InvalidInputError(
            f"speech_envelope: expected sample_rate >= 8000 Hz and fps > 0, got {sample_rate!r} and {fps!r}"
        )
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    half = int(round(sample_rate / fps))
    win = 2 * half
    padded = np.concatenate([np.zeros(half), x, np.zeros(win + half)])
    centres = np.round(np.arange(num_frames) * sample_rate / fps).astype(np.int64) + half
    centres = np.minimum(centres, padded.size - half)
    freqs = np.fft.rfftfreq(win, 1.0 / sample_rate)
    band = (freqs >= 1500) & (freqs < 3000)
    taper = np.hanning(win)
    energy, total = np.zeros(num_frames), np.zeros(num_frames)
    for first in range(0, num_frames, 1024):  # bounded memory for long clips
        c = centres[first : first + 1024]
        power = np.abs(np.fft.rfft(padded[c[:, None] + np.arange(-half, half)] * taper, axis=1)) ** 2
        energy[first : first + c.size], total[first : first + c.size] = power[:, band].sum(1), power.sum(1)
    eps = 0.01 * float(np.median(total)) + 1e-12
    return _highpass(np.log(energy + eps), int(round(HIGHPASS_S * fps)))


def mouth_activity(mouth: np.ndarray, fps: float) -> np.ndarray:
    """Per track, one mouth signal to correlate with :func:`speech_envelope`.

    The sum of three standardised (zero mean, unit variance over the track's frames) measures:
    the inner-lip gap, the lower-lip-to-nose distance and the frame-to-frame change of the gap,
    high-passed like the envelope (``HIGHPASS_S``). Frames where the track is absent stay NaN.

    Args:
        mouth: float ``[T, N, 2]`` :attr:`FaceTracks.mouth` (NaN where absent).
        fps: frame rate, Hz.

    Returns:
        float64 ``[T, N]``.
    """
    m = np.asarray(mouth, dtype=np.float64)
    out = np.full(m.shape[:2], np.nan)
    for t in range(m.shape[0]):
        ok = np.isfinite(m[t, :, 0])
        if ok.sum() < 3:
            continue
        gap, drop = m[t, ok, 0], m[t, ok, 1]
        change = np.abs(np.diff(gap, prepend=gap[0]))
        signal = sum((v - v.mean()) / max(float(v.std()), 1e-9) for v in (gap, drop, change))
        out[t, ok] = _highpass(signal, int(round(HIGHPASS_S * fps)))
    return out


def _window_bounds(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the ``[start, end)`` of a window of ``window`` frames centred on it, shifted
    inside ``[0, n)`` at both ends (so the first frames share the first full window)."""
    start = np.clip(np.arange(n) - window // 2, 0, max(n - window, 0))
    return start, np.minimum(start + window, n)


def speaker_scores(
    activity: np.ndarray, envelope: np.ndarray, fps: float, window_s: float = WINDOW_S, max_lag_s: float = MAX_LAG_S
) -> np.ndarray:
    """Sliding-window correlation of each track's mouth activity with the speech envelope.

    For frame ``n`` and track ``t``: the Pearson correlation of ``activity[t, k]`` with
    ``envelope[k + lag]`` over the frames ``k`` of the window around ``n`` where the track is present,
    maximised over ``lag`` in ``-max_lag .. +max_lag`` frames (the mouth may lead or trail the sound).

    Args:
        activity: float ``[T, N]`` :func:`mouth_activity`, NaN where track ``t`` is absent.
        envelope: float ``[N]`` :func:`speech_envelope`.
        fps: frame rate, Hz (converts the seconds below into frames).
        window_s: window length, seconds (at least 8 frames).
        max_lag_s: lag search range, seconds.

    Returns:
        float64 ``[T, N]`` correlations in -1..1; NaN where the track is present in less than half of
        the window or either signal is constant there.
    """
    op = np.asarray(activity, dtype=np.float64)
    env = np.asarray(envelope, dtype=np.float64)
    t_count, n = op.shape
    window = max(8, int(round(window_s * fps)))
    max_lag = int(round(max_lag_s * fps))
    start, end = _window_bounds(n, window)
    best = np.full((t_count, n), -np.inf)
    for lag in range(-max_lag, max_lag + 1):
        shifted = np.full(n, np.nan)
        src = np.arange(n) + lag
        ok = (src >= 0) & (src < n)
        shifted[ok] = env[src[ok]]
        for t in range(t_count):
            valid = np.isfinite(op[t]) & np.isfinite(shifted)
            x, y = np.where(valid, op[t], 0.0), np.where(valid, shifted, 0.0)
            sums = [np.concatenate([[0.0], np.cumsum(v)]) for v in (valid.astype(np.float64), x, y, x * x, y * y, x * y)]
            c, sx, sy, sxx, syy, sxy = (s[end] - s[start] for s in sums)
            with np.errstate(invalid="ignore", divide="ignore"):
                cov = sxy - sx * sy / c
                var = (sxx - sx * sx / c) * (syy - sy * sy / c)
                r = cov / np.sqrt(var)
            r[(c < MIN_PRESENT * (end - start)) | ~(var > 1e-12)] = np.nan
            best[t] = np.fmax(best[t], r)
    best[~np.isfinite(best)] = np.nan
    return best


def choose_speaker(
    tracks: FaceTracks, envelope: np.ndarray, fps: float, window_s: float = WINDOW_S, max_lag_s: float = MAX_LAG_S
) -> np.ndarray:
    """The active speaker's track in every frame (``auto``).

    Frame by frame, the track with the highest :func:`speaker_scores` is followed (a track has a
    score wherever it is present in at least half of the window, so a speaker whose face is lost
    for a few frames keeps the choice: those frames get no face and pass through, the other faces
    are not lip-synced instead). Once the choice has won a comparison (two or more tracks
    scored), it moves to another track only when that track's score exceeds the current one's by
    ``SWITCH_MARGIN`` (0.15), or when the current track has no score. Where no track has a score
    (silence, or faces seen too briefly), the current choice is kept, or the largest present face
    taken. The first frames share the first full window, so the choice is made from the start.

    Args:
        tracks: the clip's :class:`~latentsync.face.tracks.FaceTracks`.
        envelope: float ``[N]`` speech envelope of the same frames (:func:`speech_envelope`).
        fps, window_s, max_lag_s: see :func:`speaker_scores`.

    Returns:
        int64 ``[N]`` track id per frame, -1 where no face is present.

    Raises:
        InvalidInputError: ``envelope`` does not have one value per frame.
    """
    n = len(tracks)
    env = np.asarray(envelope, dtype=np.float64).reshape(-1)
    if env.shape[0] != n:
        raise InvalidInputError(f"envelope: expected {n} values (one per frame of the tracks), got {env.shape[0]}")
    present = tracks.present()
    scores = speaker_scores(mouth_activity(tracks.mouth, fps), env, fps, window_s, max_lag_s)
    out = np.full(n, -1, dtype=np.int64)
    current, contested = -1, False  # contested: the current choice won a comparison of scores
    for i in range(n):
        scored = np.flatnonzero(np.isfinite(scores[:, i]))  # a track absent here may still have a score
        if scored.size == 0:
            here = np.flatnonzero(present[:, i])
            if here.size and current not in here:
                boxes = {int(t): tracks.boxes[t, i] for t in here}
                current, contested = pick_face(FaceChoice("largest"), boxes, tracks.frame_size), False
        else:
            best = int(scored[np.argmax(scores[scored, i])])
            if current not in scored or not contested or scores[best, i] > scores[current, i] + SWITCH_MARGIN:
                current = best
            contested = contested or scored.size > 1
        if current >= 0 and present[current, i]:
            out[i] = current
    return out
