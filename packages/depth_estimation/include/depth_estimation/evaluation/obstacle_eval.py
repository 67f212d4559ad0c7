"""Obstacle metrics on bags with obstacle ground truth (``depth-sim2bag``'s ``/<ns>/obstacle_gt`` and
``/<ns>/depth_gt/obstacle_mask``), for ``depth-eval --align ground`` and the evaluator node.

Full-frame scores are dominated by the road: a "model" that predicts nothing but the road plane
scores well on full frames and badly on what a robot must not hit. Two views of the metric depth
(scale from the ground alone) that do not let the road hide the obstacles:

* **obstacle pixels**: the metric prediction against the ground truth on the masked pixels only
  (points off the road), ground truth within the depth range; ``obstacle_abs_rel`` = mean |p - d| / d
  and ``obstacle_delta1`` = share with max(p/d, d/p) < 1.25, pooled over every obstacle pixel of
  every scored frame (frames with large obstacles weigh more, as they do for a robot).
* **obstacle distance**: the node's own ``~obstacle_distance`` logic
  (:func:`depth_estimation.geometry.obstacles.obstacle_distance`, the node's ``default.yaml``
  corridor, heights and range, the ground plane of ``--extrinsics``) on the metric prediction, against
  the ground truth's: ``distance_median_abs_error_m`` over frames where both see an obstacle,
  ``distance_within_10pct`` = share of frames with a true obstacle where the prediction is within 10 %
  of it (no prediction = outside), ``detection_rate_1m`` = share of frames with a true obstacle
  closer than 1 m where the prediction sees one at all, ``false_alarms`` = frames with no true
  obstacle where the prediction sees one (``false_alarm_rate`` of those frames).

Per-frame records carry ``obstacle_pixels``, ``obstacle_abs_rel`` (None without obstacle pixels),
``obstacle_gt_m`` and ``obstacle_pred_m`` (None = no obstacle in the corridor).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from depth_estimation.evaluation.sim_world import node_obstacle_params
from depth_estimation.geometry import obstacles
from depth_estimation.geometry.camera import FrameRays, Intrinsics
from depth_estimation.geometry.plane import GroundPlane
from depth_estimation.io.rgbd import obstacle_truth, stamp_ns, unpack_mask

WITHIN = 0.10  # relative error of a distance "within 10 %"
NEAR_M = 1.0  # detection rate for true obstacles closer than this
DELTA1 = 1.25


def none_if_inf(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


class ObstacleTruth:
    """A bag's obstacle ground truth by header stamp: the mask (bool HxW) and the distance (inf = none)."""

    def __init__(self, masks: Dict[int, np.ndarray], distances: Dict[int, float], params: Dict[str, float]):
        self.masks, self.distances, self.params = masks, distances, params
        self.rays: Optional[FrameRays] = None  # the pixel rays of the bag's camera, once

    @classmethod
    def from_bag(cls, bag: str, depth_topic: str) -> Optional["ObstacleTruth"]:
        """The ground truth beside ``depth_topic`` (same namespace); None when the bag has none."""
        masks, distances = obstacle_truth(bag, depth_topic)
        if not distances:
            return None
        return cls(masks, distances, node_obstacle_params())

    def mask(self, stamp_ns: int) -> Optional[np.ndarray]:
        packed = self.masks.get(stamp_ns)
        if packed is None:
            return None
        return unpack_mask(packed)

    def score(self, stamp_ns: int, pred_m: np.ndarray, gt_m: np.ndarray, plane: GroundPlane,
              intrinsics: Intrinsics, depth_range: Tuple[float, float]) -> Dict:
        """Frame ``stamp_ns``'s obstacle record of the metric prediction ``pred_m`` (NaN = no value)."""
        record = {}  # type: Dict
        mask = self.mask(stamp_ns)
        if mask is not None and mask.shape == pred_m.shape:
            record.update(pixel_record(pred_m, gt_m, mask, depth_range))
        if stamp_ns in self.distances:
            cam = intrinsics.for_frame(*pred_m.shape)
            if self.rays is None or self.rays.intrinsics != cam:
                self.rays = FrameRays(cam)
            p = self.params
            predicted = obstacles.obstacle_distance(
                np.nan_to_num(pred_m, nan=0.0), plane, cam, p["corridor_width"],
                min_height_m=p["obstacle_min_height"], max_range_m=p["obstacle_max_range"],
                max_height_m=p["obstacle_max_height"], rays=self.rays)
            record.update(obstacle_gt_m=none_if_inf(self.distances[stamp_ns]),
                          obstacle_pred_m=none_if_inf(predicted))
        return record


class StreamScorer:
    """The evaluator node's obstacle metrics: the node's metric depth (``~depth/metric``) and its
    ``~obstacle_distance`` as they arrive, against the bag's ground truth (``truth``) and its depth
    (:meth:`ground_truth`), paired by stamp in any order. The node publishes nothing metric while its
    ground fit is not confident (state NONE): :meth:`summary` counts the answered frames without a
    distance as ``frames_without_output``."""

    def __init__(self, truth: ObstacleTruth, depth_range: Tuple[float, float]):
        self.truth, self.depth_range = truth, depth_range
        self.depths: Dict[int, np.ndarray] = {}
        self.gts: Dict[int, np.ndarray] = {}
        self.records: Dict[int, Dict] = {}

    def ground_truth(self, stamp: int, gt_m: np.ndarray) -> None:
        self.gts[stamp] = gt_m
        self._pair(stamp)

    def metric_depth(self, stamp: int, depth_m: np.ndarray) -> None:
        self.depths[stamp] = depth_m
        self._pair(stamp)

    def distance(self, stamp: int, value: float) -> None:
        if not math.isnan(value) and stamp in self.truth.distances:
            self.records.setdefault(stamp, {}).update(obstacle_gt_m=none_if_inf(self.truth.distances[stamp]),
                                                      obstacle_pred_m=none_if_inf(value))

    def _pair(self, stamp: int) -> None:
        if stamp in self.depths and stamp in self.gts:
            depth, gt = self.depths.pop(stamp), self.gts.pop(stamp)
            mask = self.truth.mask(stamp)
            if mask is not None and mask.shape == depth.shape == gt.shape:
                self.records.setdefault(stamp, {}).update(pixel_record(depth, gt, mask, self.depth_range))

    def summary(self, answered: int) -> Dict:
        """The metrics, and how many of the ``answered`` frames (those the node gave depth for) had no
        obstacle distance."""
        records = [self.records[s] for s in sorted(self.records)]
        with_distance = sum(1 for r in records if "obstacle_gt_m" in r)
        return dict(summarize(records), frames_without_output=max(0, answered - with_distance))


def pixel_record(pred_m: np.ndarray, gt_m: np.ndarray, mask: np.ndarray,
                 depth_range: Tuple[float, float]) -> Dict:
    """Obstacle-pixel sums of one frame: pixels, sum of |p - d| / d, delta1 hits (prediction clipped to
    the depth range, as the full-frame metrics do; pixels without a prediction left out)."""
    lo, hi = depth_range
    pred = np.asarray(pred_m, np.float64)
    gt = np.asarray(gt_m, np.float64)
    keep = mask & (gt >= lo) & (gt <= hi) & np.isfinite(pred)
    p, d = np.clip(pred[keep], lo, hi), gt[keep]
    n = int(keep.sum())
    rel = float(np.sum(np.abs(p - d) / d)) if n else 0.0
    hits = int(np.sum(np.maximum(p / d, d / p) < DELTA1)) if n else 0
    return {"obstacle_pixels": n, "obstacle_abs_rel": rel / n if n else None, "obstacle_abs_rel_sum": rel,
            "obstacle_delta1_hits": hits}


def summarize(per_frame: List[Dict]) -> Dict:
    """The bag's obstacle metrics from the per-frame records (see the module docstring)."""
    pixels = sum(r.get("obstacle_pixels", 0) for r in per_frame)
    rel = sum(r.get("obstacle_abs_rel_sum", 0.0) for r in per_frame)
    hits = sum(r.get("obstacle_delta1_hits", 0) for r in per_frame)
    out = {"obstacle_pixels": pixels, "obstacle_abs_rel": rel / pixels if pixels else None,
           "obstacle_delta1": hits / pixels if pixels else None}
    pairs = [(r["obstacle_gt_m"], r["obstacle_pred_m"]) for r in per_frame if "obstacle_gt_m" in r]
    seen = [(g, p) for g, p in pairs if g is not None]
    both = [abs(p - g) for g, p in seen if p is not None]
    near = [p is not None for g, p in seen if g < NEAR_M]
    free = [p is not None for g, p in pairs if g is None]
    out.update(distance_frames=len(pairs), obstacle_frames=len(seen),
               distance_median_abs_error_m=float(np.median(both)) if both else None,
               distance_within_10pct=(sum(1 for g, p in seen if p is not None and abs(p - g) <= WITHIN * g)
                                      / len(seen)) if seen else None,
               near_frames=len(near), detection_rate_1m=sum(near) / len(near) if near else None,
               free_frames=len(free), false_alarms=sum(free),
               false_alarm_rate=sum(free) / len(free) if free else None)
    return out


def fmt(value: Optional[float], spec: str = "%.3f") -> str:
    """A number for the console and tables; "-" for None (nothing to measure)."""
    return "-" if value is None else spec % value


def summary_line(summary: Dict) -> str:
    """One line of :func:`summarize`'s numbers for the console."""
    s = summary
    return ("obstacle pixels %d: abs_rel %s delta1 %s; obstacle distance (%d frames with an obstacle): "
            "median error %s m, within 10 %% %s, detected within 1 m %s of %d, false alarms %d of %d"
            % (s["obstacle_pixels"], fmt(s["obstacle_abs_rel"]), fmt(s["obstacle_delta1"]),
               s["obstacle_frames"],
               fmt(s["distance_median_abs_error_m"]), fmt(s["distance_within_10pct"]),
               fmt(s["detection_rate_1m"]), s["near_frames"], s["false_alarms"], s["free_frames"]))
