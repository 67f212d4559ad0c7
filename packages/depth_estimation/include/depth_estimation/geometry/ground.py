"""Relative disparity -> metres, every frame, from the ground the camera is known to look at.

Pixels below the horizon see either the ground or something standing on it, and that something is closer
than the ground behind it. So over candidate ground pixels, the model's disparity p and the ground's
disparity g = 1 / ground depth (:func:`ground_depth_map`, from the calibration) follow g = scale * p + shift
on the ground and lie above that line (metric disparity > g) on obstacles. :func:`fit_ground` finds the line
with RANSAC on a regular grid of about a thousand candidates (hypotheses through one nearer and one farther
candidate): residuals are relative, (scale * p + shift - g) / g, i.e. a depth ratio; a hypothesis scores its
inliers (|residual| < ``threshold``) minus ``behind_penalty`` times the points it would put clearly *behind*
the ground (residual < -``behind_threshold``: impossible for a surface below the horizon); the best one
whose inliers reach over a range of distances is refined by weighted least squares on its inliers (a last
pass on the residuals' own robust scale). The fit is confident when enough candidates are inliers, few are
put behind the ground, the inliers form regions rather than a scatter, and they reach from z to ``min_span``
z: a band of ground at one distance (the foot of a wall) fixes no scale. :class:`MetricAligner` adds the
temporal side: an exponential filter on (scale, shift) with a time constant from the frames' stamps, and,
when the fit is poor or the ground is hidden, the last good estimate held for ``hold_s`` (state HOLD) before
giving up (state NONE: no metric depth rather than wrong metres).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from depth_estimation.geometry.camera import Intrinsics, pixel_rays
from depth_estimation.geometry.plane import GroundPlane

STATES = ("OK", "HOLD", "NONE")
DEFAULT_MAX_RANGE_M = 5.0  # metres: the node's metric_max_range (default.yaml) and depth-eval's
DEFAULT_SAMPLES = 1024


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit_ground` fits and when it calls a fit confident (see its docstring); built once
    (the node from its parameters, ``depth-eval`` from its options) and shared by every frame.
    ``min_inlier_share`` is a share of the usable candidates, ``min_inliers`` a count of them."""
    threshold: float = 0.08         # inlier: metric depth within ~8 % of the ground's
    behind_threshold: float = 0.15  # "behind the ground": metric depth > ~1.18x the ground's
    behind_penalty: float = 1.0
    min_inlier_share: float = 0.1
    max_behind_share: float = 0.2
    min_inliers: int = 100
    min_coherence: float = 0.6
    min_span: float = 1.5           # the inliers' ground reaches from z to at least 1.5 z (10th-90th pct.)
    iterations: int = 128
    samples: int = DEFAULT_SAMPLES

    def __post_init__(self):
        if not 0 <= self.min_inlier_share <= 1 or not 0 <= self.max_behind_share <= 1:
            raise ValueError("FitOptions: min_inlier_share and max_behind_share are shares in [0, 1]")
        if int(self.min_inliers) != self.min_inliers or self.min_inliers < 0:
            raise ValueError("FitOptions: min_inliers is a count of candidates, got %r" % (self.min_inliers,))


def ground_depth_map(plane: GroundPlane, intrinsics: Intrinsics, height: int, width: int) -> np.ndarray:
    """float32 ``height`` x ``width``: the depth (z, metres) of the ground at each raw pixel of a frame of
    that size (distortion removed with the intrinsics, scaled to the frame), NaN at and above the
    horizon; read-only. Computed on each call (:class:`MetricAligner` keeps what it needs per size)."""
    xn, yn = pixel_rays(intrinsics, int(height), int(width))
    n = plane.normal_vector
    dots = n[0] * xn + n[1] * yn + n[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(dots > 1e-6, plane.distance / dots, np.nan).astype(np.float32)
    depth.setflags(write=False)
    return depth


@dataclass
class GroundFit:
    """One frame's fit of ground disparity = ``scale`` * prediction + ``shift``: the share of usable
    candidates that are inliers, the inliers' depth RMSE in metres (``rmse``), the ``inliers`` (a
    boolean mask shaped like the prediction, True on the sampled candidates that fit), whether it is
    confident (``ok``: enough inliers, few candidates put behind the ground, ``behind_share``, inliers in
    regions, ``coherence``, over a range of distances, ``span``) and why not (``reason``)."""
    scale: float
    shift: float
    inlier_share: float
    rmse: float
    inliers: Optional[np.ndarray]
    ok: bool
    reason: str = ""
    behind_share: float = math.nan
    coherence: float = math.nan
    span: float = math.nan


def _no_fit(reason: str) -> GroundFit:
    return GroundFit(math.nan, math.nan, 0.0, math.nan, None, False, reason)


def _hypotheses(x: np.ndarray, y: np.ndarray, iterations: int, rng) -> Tuple[np.ndarray, np.ndarray]:
    """Lines through pairs of candidates, one nearer and one farther than the median ground distance
    (pairs with leverage: two points at one distance fix no slope); only positive scales."""
    order = np.argsort(y)
    half = x.size // 2
    i = order[rng.integers(0, half, iterations)]
    j = order[half + rng.integers(0, x.size - half, iterations)]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (y[i] - y[j]) / (x[i] - x[j])
    t = y[i] - s * x[i]
    keep = np.isfinite(s) & np.isfinite(t) & (s > 0)
    return s[keep], t[keep]


def _refine(x: np.ndarray, y: np.ndarray, inliers: np.ndarray) -> Tuple[float, float]:
    """Weighted least squares of (s * x + t) / y = 1 over the inliers (relative residuals)."""
    w = 1.0 / y[inliers]
    u = x[inliers] * w  # minimise sum((s * u + t * w - 1)^2): the 2x2 normal equations
    suu, suw, sww = float(u @ u), float(u @ w), float(w @ w)
    det = suu * sww - suw * suw
    if not abs(det) > 1e-12 * suu * sww:
        return math.nan, math.nan
    su, sw = float(u.sum()), float(w.sum())
    return (su * sww - sw * suw) / det, (sw * suu - su * suw) / det


@dataclass(frozen=True)
class CandidateGrid:
    """The candidates :func:`fit_ground` samples (from :func:`sample_grid`): ``flat`` is an int64 grid of
    flat pixel indices of a frame of ``shape``, -1 where the grid point is not a candidate."""
    flat: np.ndarray
    shape: Tuple[int, int]


def candidate_mask(candidates: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Boolean HxW mask of ``candidates``: a boolean mask of that size, or 1-D flat pixel indices. Any
    other form (a 0/1 integer mask, a 2-D index array) is refused: its meaning would be a guess."""
    height, width = int(shape[0]), int(shape[1])
    candidates = np.asarray(candidates)
    if candidates.dtype == bool and candidates.size == height * width:
        return candidates.reshape(height, width)
    if candidates.dtype.kind in "iu" and candidates.ndim == 1:
        if candidates.size and (candidates.min() < 0 or candidates.max() >= height * width):
            raise ValueError("candidates: flat pixel indices outside a %dx%d frame" % (height, width))
        mask = np.zeros(height * width, bool)
        mask[candidates] = True
        return mask.reshape(height, width)
    raise ValueError("candidates: a boolean %dx%d mask or 1-D flat pixel indices, got %s of shape %s"
                     % (height, width, candidates.dtype, candidates.shape))


def sample_grid(candidates: np.ndarray, shape: Tuple[int, int],
                samples: int = DEFAULT_SAMPLES) -> CandidateGrid:
    """The candidates :func:`fit_ground` samples: a regular grid over the frame (stride chosen so that
    about ``samples`` candidates fall on it). ``candidates``: see :func:`candidate_mask`."""
    mask = candidate_mask(candidates, shape)
    height, width = mask.shape
    stride = max(1, int(math.ceil(math.sqrt(np.count_nonzero(mask) / float(max(1, samples))))))
    offset = stride // 2
    rows, cols = np.arange(offset, height, stride), np.arange(offset, width, stride)
    flat = rows[:, None] * width + cols[None, :]
    return CandidateGrid(np.where(mask[offset::stride, offset::stride], flat, -1), (height, width))


def _span(y: np.ndarray) -> float:
    """90th / 10th percentile of ground disparities (how far the ground reaches, as a depth ratio)."""
    if y.size < 2:
        return math.nan
    low, high = np.percentile(y, [10, 90])
    return float(high / low)


def _ransac(x: np.ndarray, y: np.ndarray, threshold: float, behind_threshold: float, behind_penalty: float,
            iterations: int, min_span: float, rng) -> Optional[Tuple[float, float, np.ndarray]]:
    """(scale, shift, inliers) of the best-scoring line y = scale * x + shift among the few best whose
    inliers span ``min_span`` in distance (a band at one distance, e.g. an upright board's foot, fixes
    no slope), refined; None without a hypothesis of positive scale."""
    s, t = _hypotheses(x, y, iterations, rng)
    if s.size == 0:
        return None
    resid = np.outer(s.astype(np.float32), x.astype(np.float32))
    resid += t.astype(np.float32)[:, None]
    resid *= (1.0 / y).astype(np.float32)
    resid -= np.float32(1.0)
    score = (np.abs(resid) < threshold).sum(axis=1) - behind_penalty * (resid < -behind_threshold).sum(axis=1)
    order = np.argsort(-score, kind="stable")[:8]
    best = int(order[0])
    for h in order:
        if _span(y[np.abs(resid[h]) < threshold]) >= min_span:
            best = int(h)
            break
    inliers = np.abs(resid[best]) < threshold
    scale, shift = float(s[best]), float(t[best])
    for tighten in (False, False, True):
        if inliers.sum() < 2:
            break
        scale, shift = _refine(x, y, inliers)
        resid = np.abs((scale * x + shift) / y - 1.0)
        inliers = resid < threshold
        if tighten and inliers.sum() >= 10:  # a last pass on the residuals' own scale (3 robust sigmas)
            tight = resid < min(threshold, 3.0 * 1.4826 * float(np.median(resid[inliers])))
            if tight.sum() >= 10:
                scale, shift = _refine(x, y, tight)
                inliers = np.abs((scale * x + shift) / y - 1.0) < threshold
    return scale, shift, inliers


def _coherence(inliers: np.ndarray) -> float:
    """Share of the grid's inliers with an inlier among their 4 grid neighbours: ~1 for a ground
    region, about 1 - (1 - share)^4 for inliers scattered by chance."""
    near = np.zeros_like(inliers)
    near[:, :-1] |= inliers[:, 1:]
    near[:, 1:] |= inliers[:, :-1]
    near[:-1] |= inliers[1:]
    near[1:] |= inliers[:-1]
    count = np.count_nonzero(inliers)
    return float(np.count_nonzero(inliers & near)) / count if count else 0.0


def fit_ground(disparity: np.ndarray, ground_disparity: np.ndarray, candidates,
               options: FitOptions = FitOptions(), rng=None) -> GroundFit:
    """Robust fit of ``ground_disparity`` (1 / ground depth, HxW; NaN/0 where no ground) = scale *
    ``disparity`` (the model's relative disparity, HxW) + shift over ``candidates`` (ground pixels below
    the horizon, obstacles among them: a boolean HxW mask, 1-D flat pixel indices, or a
    :class:`CandidateGrid`), RANSAC on a regular grid of about ``options.samples`` of them; see the
    module docstring. Confident (``ok``) with at least ``min_inliers`` (a count) and
    ``min_inlier_share`` (a share) of the usable candidates as inliers, at most ``max_behind_share`` of
    them put behind the ground, inliers that form regions (``min_coherence`` of them next to another)
    rather than a scatter, and whose ground reaches over distances from z to ``min_span`` z (10th to 90th
    percentile: a band of one distance fixes a point of the line, not its slope). ``rng``: a numpy
    Generator (seeded 0 when None)."""
    rng = np.random.default_rng(0) if rng is None else rng
    o = options
    if isinstance(candidates, CandidateGrid):
        if tuple(candidates.shape) != tuple(np.shape(disparity)):
            raise ValueError("fit_ground: a candidate grid of a %s frame for a %s prediction"
                             % (candidates.shape, np.shape(disparity)))
        grid = candidates.flat
    else:
        grid = sample_grid(candidates, np.shape(disparity), o.samples).flat
    valid = grid >= 0
    index = grid[valid]
    x = np.asarray(disparity).reshape(-1)[index].astype(np.float64)
    y = np.asarray(ground_disparity).reshape(-1)[index].astype(np.float64)
    usable = np.isfinite(x) & np.isfinite(y) & (y > 0)
    valid[valid] = usable
    index, x, y = index[usable], x[usable], y[usable]
    if x.size < max(2, o.min_inliers):
        return _no_fit("%d usable ground candidates (need %d)" % (x.size, max(2, o.min_inliers)))
    found = _ransac(x, y, o.threshold, o.behind_threshold, o.behind_penalty, o.iterations, o.min_span, rng)
    if found is None:
        return _no_fit("no hypothesis with a positive scale")
    scale, shift, inliers = found
    count, share = int(inliers.sum()), float(inliers.mean())
    behind = float(np.mean((scale * x + shift) / y - 1.0 < -o.behind_threshold))
    on_grid = np.zeros(valid.shape, bool)
    on_grid[valid] = inliers
    coherence = _coherence(on_grid)
    span = _span(y[inliers])
    rmse = math.nan
    if count:
        with np.errstate(divide="ignore", invalid="ignore"):
            rmse = float(np.sqrt(np.mean((1.0 / (scale * x[inliers] + shift) - 1.0 / y[inliers]) ** 2)))
    mask = np.zeros(np.size(disparity), bool)
    mask[index[inliers]] = True
    ok = (scale > 0 and count >= o.min_inliers and share >= o.min_inlier_share
          and behind <= o.max_behind_share and coherence >= o.min_coherence and span >= o.min_span
          and math.isfinite(rmse))
    reason = "" if ok else ("inlier share %.2f (%d of %d candidates), %.2f behind the ground, coherence "
                            "%.2f, distance span %.2f, scale %.3g"
                            % (share, count, x.size, behind, coherence, span, scale))
    return GroundFit(scale, shift, share, rmse, mask.reshape(np.shape(disparity)), ok, reason, behind,
                     coherence, span)


def metric_depth(disparity: np.ndarray, scale: float, shift: float, max_range_m: float) -> np.ndarray:
    """float32 depth in metres = 1 / (scale * disparity + shift); NaN where that disparity is not above
    1 / ``max_range_m`` (beyond the range, the sky, non-positive) or the prediction has no value."""
    m = np.asarray(disparity, np.float32) * np.float32(scale)
    m += np.float32(shift)
    depth = np.full(m.shape, np.nan, np.float32)
    with np.errstate(invalid="ignore"):
        np.divide(np.float32(1.0), m, out=depth, where=m > np.float32(1.0 / max_range_m))
    return depth


class MetricFrame:
    """One frame's metric output: ``depth_m`` (float32 HxW, NaN where unknown; None in state NONE), the
    (filtered) ``scale`` and ``shift`` used, this frame's fit ``inlier_share`` and ``ground_rmse``
    (metres), ``state`` (OK, HOLD or NONE), ``fit`` (this frame's :class:`GroundFit`) and
    :attr:`inliers`, the candidate ground pixels that agree with the ground under the scale and shift
    used (boolean HxW, None in NONE; computed when first read, so a node that never reads it never
    pays for it)."""

    def __init__(self, depth_m: Optional[np.ndarray], scale: float, shift: float, inlier_share: float,
                 ground_rmse: float, state: str, inliers=None, fit: Optional[GroundFit] = None):
        self.depth_m, self.scale, self.shift = depth_m, scale, shift
        self.inlier_share, self.ground_rmse, self.state, self.fit = inlier_share, ground_rmse, state, fit
        self._inliers = inliers

    @property
    def inliers(self) -> Optional[np.ndarray]:
        if callable(self._inliers):
            self._inliers = self._inliers()
        return self._inliers

    def __repr__(self) -> str:
        return "MetricFrame(state=%s, scale=%.4g, shift=%.4g, inlier_share=%.3f, ground_rmse=%.4g)" % (
            self.state, self.scale, self.shift, self.inlier_share, self.ground_rmse)


def ground_candidates(plane: GroundPlane, intrinsics: Intrinsics, height: int, width: int,
                      max_range_m: float = DEFAULT_MAX_RANGE_M) -> Tuple[np.ndarray, np.ndarray]:
    """(ground disparity, candidates) for frames of ``height`` x ``width``: 1 / :func:`ground_depth_map`
    (float32 HxW, 0 at and above the horizon) and the flat indices of the pixels whose ground lies
    within ``max_range_m`` (the pixels :func:`fit_ground` may treat as ground)."""
    depth = ground_depth_map(plane, intrinsics, int(height), int(width))
    with np.errstate(invalid="ignore", divide="ignore"):
        disparity = np.where(np.isfinite(depth), 1.0 / depth, 0.0).astype(np.float32)
        index = np.flatnonzero(np.isfinite(depth) & (depth <= max_range_m))
    return disparity, index


def inlier_mask(disparity: np.ndarray, ground_disparity: np.ndarray, index: np.ndarray, scale: float,
                shift: float, threshold: float = FitOptions.threshold) -> np.ndarray:
    """Boolean mask shaped like ``disparity``: the candidate pixels ``index`` whose metric disparity
    (``scale`` * disparity + ``shift``) is within ``threshold`` (relative) of the ground's."""
    ground = np.asarray(ground_disparity).reshape(-1)[index]
    m = np.asarray(disparity, np.float32).reshape(-1)[index] * np.float32(scale) + np.float32(shift)
    mask = np.zeros(np.size(disparity), bool)
    with np.errstate(invalid="ignore"):
        mask[index] = np.abs(m - ground) < np.float32(threshold) * ground
    return mask.reshape(np.shape(disparity))


class MetricAligner:
    """Relative disparity frames -> metric depth frames for one camera (``plane``, ``intrinsics``).

    :meth:`update` fits the frame (:func:`fit_ground`), filters (scale, shift) exponentially with
    ``time_constant_s`` (dt from the frames' stamps; 0 = no filtering; a stamp going backwards restarts
    the filter), holds the last good estimate for ``hold_s`` when a fit is not confident (HOLD), then
    publishes nothing metric (NONE) until a confident fit comes back. Ground maps and candidates are
    cached per frame size."""

    def __init__(self, plane: GroundPlane, intrinsics: Intrinsics, time_constant_s: float = 0.5,
                 hold_s: float = 1.0, max_range_m: float = DEFAULT_MAX_RANGE_M,
                 fit: FitOptions = FitOptions(), seed: int = 0):
        if time_constant_s < 0 or hold_s < 0 or not max_range_m > 0:
            raise ValueError("MetricAligner: need time_constant_s >= 0, hold_s >= 0 and max_range_m > 0")
        self.plane, self.intrinsics = plane, intrinsics
        self.time_constant_s, self.hold_s = float(time_constant_s), float(hold_s)
        self.max_range_m = float(max_range_m)
        self.fit_options = fit
        self._rng = np.random.default_rng(seed)
        self._candidates = {}  # type: dict
        self.reset()

    def reset(self) -> None:
        """Forget the filtered estimate (the next confident fit starts afresh)."""
        self.scale = self.shift = math.nan
        self._last_stamp = self._last_good = None  # type: Optional[float]

    def candidates(self, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, CandidateGrid]:
        """(ground disparity, candidate flat indices, the grid the fit samples) of frames of ``shape``."""
        key = (int(shape[0]), int(shape[1]))
        if key not in self._candidates:
            gd, index = ground_candidates(self.plane, self.intrinsics, key[0], key[1], self.max_range_m)
            self._candidates[key] = (gd, index, sample_grid(index, key, self.fit_options.samples))
        return self._candidates[key]

    def _filter(self, fit: GroundFit, stamp_s: float) -> None:
        restart = self._last_stamp is None or stamp_s < self._last_stamp or not math.isfinite(self.scale)
        if restart or self.time_constant_s == 0:
            alpha = 1.0
        else:
            alpha = 1.0 - math.exp(-(stamp_s - self._last_stamp) / self.time_constant_s)
        self.scale = fit.scale if restart else self.scale + alpha * (fit.scale - self.scale)
        self.shift = fit.shift if restart else self.shift + alpha * (fit.shift - self.shift)
        self._last_stamp = self._last_good = stamp_s

    def update(self, disparity: np.ndarray, stamp_s: float) -> MetricFrame:
        """The metric frame of ``disparity`` (float32 HxW relative disparity, larger = closer) stamped
        ``stamp_s`` seconds."""
        disparity = np.asarray(disparity, np.float32)
        gd, index, grid = self.candidates(disparity.shape)
        fit = fit_ground(disparity, gd, grid, self.fit_options, rng=self._rng)
        if fit.ok:
            self._filter(fit, float(stamp_s))
            state = "OK"
        elif self._last_good is not None and 0 <= stamp_s - self._last_good <= self.hold_s:
            state = "HOLD"
        else:
            self.reset()
            return MetricFrame(None, math.nan, math.nan, fit.inlier_share, fit.rmse, "NONE", None, fit)
        depth = metric_depth(disparity, self.scale, self.shift, self.max_range_m)
        scale, shift = self.scale, self.shift
        inliers = functools.partial(inlier_mask, disparity, gd, index, scale, shift,
                                    self.fit_options.threshold)
        return MetricFrame(depth, scale, shift, fit.inlier_share, fit.rmse, state, inliers, fit)
