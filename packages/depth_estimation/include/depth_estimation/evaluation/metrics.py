"""Monocular depth metrics (numpy only): the standard eight, valid-pixel masks, crops, alignment.

Over valid pixels, with d = ground truth and p = predicted depth (both metres):

    abs_rel  mean(|p - d| / d)              sq_rel   mean((p - d)^2 / d)
    rmse     sqrt(mean((p - d)^2))          rmse_log sqrt(mean((ln p - ln d)^2))
    log10    mean(|log10 p - log10 d|)      delta_k  share of max(p/d, d/p) < 1.25**k, k = 1, 2, 3

A relative model (Depth-Anything: inverse depth up to scale and shift) is first aligned to the
ground truth with :func:`align`:

* ``lsq-disparity``: s, t minimizing ||s * disparity + t - 1/gt||^2 over valid pixels (MiDaS /
  Depth-Anything convention); the aligned disparity is clamped to at least 1/max_depth, then
  inverted. A depth prediction (``kind="depth"``) is turned into disparity 1/p first.
* ``median``: depth *= median(gt) / median(depth) over valid pixels (monodepth2); a disparity
  prediction is inverted first.
* ``none``: the prediction is metric already (a disparity prediction is inverted).

Every mode then clips the predicted depth to [min_depth, max_depth] (BTS / AdaBins / ZoeDepth).

Prediction pixels without a value (:func:`valid_prediction`: NaN or inf, and for a depth prediction
also <= 0) take no part: :func:`align` fits and scales over the others only and returns NaN there,
and the scorers leave them out of the metrics and count them (``invalid_prediction_pixels``).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")
ALIGN_MODES = ("lsq-disparity", "median", "none")
KINDS = ("disparity", "depth")
CROPS = ("eigen", "garg", "none")

#: NYUv2 Eigen crop for 480x640 frames: rows 45:471, cols 41:601 (top, bottom, left, right).
EIGEN_CROP_NYU = (45, 471, 41, 601)
EIGEN_FRAME = (480, 640)
#: KITTI Garg crop as fractions of height (top, bottom) and width (left, right).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)

Crop = Union[None, str, Tuple[int, int, int, int]]


def crop_box(shape: Sequence[int], crop: Crop) -> Optional[Tuple[int, int, int, int]]:
    """The (top, bottom, left, right) pixel box of ``crop`` for a frame of ``shape`` (H, W, ...).

    ``"eigen"``: exactly rows 45:471, cols 41:601 on 480x640 frames; on other sizes the same
    box scaled proportionally (rounded to the nearest pixel), since the crop removes the border
    the NYU Kinect registration leaves unfilled. ``"garg"``: monodepth2's integer truncation of
    the :data:`GARG_CROP` fractions. ``None`` / ``"none"``: no crop (returns None). A 4-tuple of
    ints is used as is."""
    height, width = int(shape[0]), int(shape[1])
    if crop is None or (isinstance(crop, str) and crop == "none"):
        return None
    if isinstance(crop, str):
        if crop == "eigen":
            if (height, width) == EIGEN_FRAME:
                return EIGEN_CROP_NYU
            top, bottom, left, right = EIGEN_CROP_NYU
            return (int(round(top * height / 480.0)), int(round(bottom * height / 480.0)),
                    int(round(left * width / 640.0)), int(round(right * width / 640.0)))
        if crop == "garg":
            box = np.array([GARG_CROP[0] * height, GARG_CROP[1] * height,
                            GARG_CROP[2] * width, GARG_CROP[3] * width]).astype(np.int32)
            return tuple(int(v) for v in box)  # type: ignore[return-value]
        raise ValueError("crop %r; use one of %s or (top, bottom, left, right)" % (crop, ", ".join(CROPS)))
    box = tuple(int(v) for v in crop)
    if len(box) != 4:
        raise ValueError("crop box must be (top, bottom, left, right), got %r" % (crop,))
    return box  # type: ignore[return-value]


def crop_mask(shape: Sequence[int], crop: Crop) -> np.ndarray:
    """A boolean HxW mask, True inside ``crop`` (everywhere when there is no crop)."""
    height, width = int(shape[0]), int(shape[1])
    box = crop_box(shape, crop)
    if box is None:
        return np.ones((height, width), bool)
    top, bottom, left, right = box
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError("crop box %r does not fit a %dx%d frame" % (box, height, width))
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


def valid_mask(gt: np.ndarray, min_depth: float = 1e-3, max_depth: float = 10.0,
               crop: Crop = None) -> np.ndarray:
    """Pixels to score: finite ground truth with min_depth < gt < max_depth, inside ``crop``."""
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError("ground truth must be HxW, got shape %s" % (gt.shape,))
    if not 0 < min_depth < max_depth:
        raise ValueError("need 0 < min_depth < max_depth, got %r, %r" % (min_depth, max_depth))
    with np.errstate(invalid="ignore"):
        mask = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    return mask & crop_mask(gt.shape, crop)


def _check(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gt, mask = np.asarray(pred), np.asarray(gt), np.asarray(mask, bool)
    if pred.shape != gt.shape or mask.shape != gt.shape:
        raise ValueError("shapes differ: prediction %s, ground truth %s, mask %s"
                         % (pred.shape, gt.shape, mask.shape))
    if not mask.any():
        raise ValueError("no valid pixels to score")
    return pred, gt, mask


def compute(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """The eight metrics of :data:`METRICS` over the pixels where ``mask`` is True."""
    pred_depth, gt_depth, mask = _check(pred_depth, gt_depth, mask)
    p = pred_depth[mask].astype(np.float64)
    d = gt_depth[mask].astype(np.float64)
    if not (np.all(np.isfinite(p)) and np.all(p > 0)):
        raise ValueError("predicted depth must be finite and positive on valid pixels (align() clips it)")
    if not np.all(d > 0):
        raise ValueError("ground truth must be positive on valid pixels")
    ratio = np.maximum(p / d, d / p)
    diff = p - d
    return {
        "abs_rel": float(np.mean(np.abs(diff) / d)),
        "sq_rel": float(np.mean(diff ** 2 / d)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(d)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(d)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
    }


def valid_prediction(pred: np.ndarray, kind: str = "disparity") -> np.ndarray:
    """True where the raw prediction ``pred`` holds a value: finite, and for ``kind`` "depth" also
    > 0 (a depth of 0 or below means "no value", it is not a very near point). A disparity may be
    <= 0: lsq-disparity's fitted shift can bring it into range, the other modes read it as far."""
    if kind not in KINDS:
        raise ValueError("prediction kind %r; use one of %s" % (kind, ", ".join(KINDS)))
    pred = np.asarray(pred)
    usable = np.isfinite(pred)
    if kind == "depth":
        with np.errstate(invalid="ignore"):
            usable &= pred > 0
    return usable


def _invert(x: np.ndarray, floor: float) -> np.ndarray:
    """1/x with x floored at ``floor`` (> 0), so non-positive values give a large finite result."""
    return 1.0 / np.maximum(x, floor)


def fit_scale_shift(pred_disp: np.ndarray, target: np.ndarray,
                    mask: Optional[np.ndarray] = None) -> Tuple[float, float]:
    """(scale, shift) minimizing ||scale * pred_disp + shift - target||^2 over the pixels where
    ``mask`` is True (all pixels when None), in float64 least squares: the one scale-and-shift fit
    of the package. :func:`align` fits a disparity to ``target`` = 1 / ground-truth depth; fitting a
    prediction to a reference map of the same kind works the same way."""
    pred_disp, target = np.asarray(pred_disp), np.asarray(target)
    if pred_disp.shape != target.shape:
        raise ValueError("shapes differ: prediction %s, target %s" % (pred_disp.shape, target.shape))
    select = np.ones(target.shape, bool) if mask is None else np.asarray(mask, bool)
    x = pred_disp[select].astype(np.float64)
    y = target[select].astype(np.float64)
    a = np.stack([x, np.ones_like(x)], axis=1)
    (s, t), *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(s), float(t)


def align(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, mode: str = "lsq-disparity",
          kind: str = "disparity", min_depth: float = 1e-3, max_depth: float = 10.0) -> np.ndarray:
    """Predicted depth in metres (float64 HxW, clipped to [min_depth, max_depth]) from ``pred``
    (``kind`` "disparity" = relative inverse depth, or "depth"), aligned to ``gt`` over ``mask``
    with ``mode`` (see the module docstring). Pixels where ``pred`` has no value
    (:func:`valid_prediction`) are left out of the fit and are NaN in the result; ValueError
    when no pixel of ``mask`` has a value."""
    if mode not in ALIGN_MODES:
        raise ValueError("align mode %r; use one of %s" % (mode, ", ".join(ALIGN_MODES)))
    pred, gt, mask = _check(pred, gt, mask)
    usable = valid_prediction(pred, kind)
    fit = mask & usable
    if not fit.any():
        raise ValueError("all prediction pixels invalid (NaN, inf%s) on the %d valid ground-truth pixels"
                         % (" or <= 0 depth" if kind == "depth" else "", int(mask.sum())))
    pred = np.where(usable, pred, 1.0).astype(np.float64)  # placeholders, NaN again below
    tiny = 1e-12
    if mode == "lsq-disparity":
        disp = pred if kind == "disparity" else 1.0 / pred
        target = np.zeros(gt.shape, np.float64)
        target[fit] = 1.0 / gt[fit].astype(np.float64)
        s, t = fit_scale_shift(disp, target, fit)
        depth = _invert(s * disp + t, 1.0 / max_depth)
    elif mode == "median":
        depth = pred if kind == "depth" else _invert(pred, tiny)
        median_pred = float(np.median(depth[fit]))
        if not median_pred > 0:
            raise ValueError("median of the predicted depth over valid pixels is %r; cannot scale"
                             % median_pred)
        depth = depth * (float(np.median(gt[fit].astype(np.float64))) / median_pred)
    else:
        depth = pred if kind == "depth" else _invert(pred, tiny)
    return np.where(usable, np.clip(depth, min_depth, max_depth), np.nan)


def mean_metrics(per_frame: Iterable[Dict[str, float]]) -> Dict[str, float]:
    """The mean of each metric over frames (every frame weighs the same)."""
    frames: List[Dict[str, float]] = list(per_frame)
    if not frames:
        raise ValueError("no frames to average")
    return {key: float(np.mean([f[key] for f in frames])) for key in METRICS}
