"""The time-of-flight cross-check of the node's metric depth (ROS-free; the node feeds it messages).

:class:`TofCheck` keeps the front ToF's recent readings (:meth:`TofCheck.reading`) and, for every
metric frame, pairs the reading nearest in time (within :data:`MAX_PAIR_S`) with what the sensor
would read in that frame's metric depth (:func:`depth_estimation.geometry.tof.cone_reading`, the
sensor's pose from ``~tof_pose``). A pair is compared only when both are within the sensor's range
(0.05-1.2 m): :class:`TofComparison` per frame (ratio = ToF / metric, residual = metric - ToF). The
log of the ratio is filtered with the time constant ``~tof_time_constant`` (seconds of frame stamps;
it starts from agreement, so one odd pair does not flip it); while the filtered ratio is off by more
than ``~tof_tolerance`` the state is DISAGREE and the node's diagnostics WARN: the metres ahead are
wrong by about that ratio (the camera's height or tilt in the calibration, or the model's depth of
what is in front of the robot: the check cannot tell which).
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from depth_estimation.geometry.plane import GroundPlane
from depth_estimation.geometry.tof import MAX_RANGE_M, MIN_RANGE_M, ConeReading, TofPose, cone_reading

MAX_PAIR_S = 0.1  # a ToF reading (15 Hz) pairs with a frame stamped at most this far from it
KEEP_S = 2.0  # readings kept for pairing
STEP = 2  # every 2nd pixel in each direction of the metric depth (about 5300 in the cone at 640x480)
STATES = ("NO_READINGS", "NO_PAIRS", "AGREE", "DISAGREE")


@dataclass(frozen=True)
class TofComparison:
    """One frame's comparison: the ToF's reading and the metric depth's prediction of it (metres)."""
    stamp_s: float
    tof_m: float
    metric_m: float

    @property
    def ratio(self) -> float:
        return self.tof_m / self.metric_m

    @property
    def residual_m(self) -> float:
        return self.metric_m - self.tof_m


class TofCheck:
    """See the module docstring; thread-safe (readings and frames come from different threads)."""

    def __init__(self, pose: TofPose, time_constant_s: float, tolerance: float, step: int = STEP):
        if not (time_constant_s > 0 and tolerance > 0):
            raise ValueError("tof time constant and tolerance must be > 0")
        self.pose, self.time_constant_s, self.tolerance, self.step = pose, time_constant_s, tolerance, step
        self._readings: List[Tuple[float, float]] = []  # (stamp, range), sorted by stamp
        self.readings = self.frames = self.pairs = 0
        self.log_ratio = 0.0
        self._last_pair: Optional[float] = None
        self.last: Optional[TofComparison] = None
        self.last_prediction: Optional[ConeReading] = None
        self._residuals: List[float] = []
        self._lock = threading.Lock()

    def reading(self, stamp_s: float, range_m: float) -> None:
        """A ToF message (its stamp and raw ``range``)."""
        with self._lock:
            self.readings += 1
            bisect.insort(self._readings, (float(stamp_s), float(range_m)))
            newest = self._readings[-1][0]
            while self._readings and self._readings[0][0] < newest - KEEP_S:
                self._readings.pop(0)

    def _nearest(self, stamp_s: float) -> Optional[float]:
        if not self._readings:
            return None
        at = min(self._readings, key=lambda item: abs(item[0] - stamp_s))
        return at[1] if abs(at[0] - stamp_s) <= MAX_PAIR_S else None

    def frame(self, stamp_s: float, depth_m: np.ndarray, xn: np.ndarray, yn: np.ndarray,
              plane: GroundPlane) -> Optional[TofComparison]:
        """Compare one metric frame (``depth_m`` with its pixel rays and ground plane) with the ToF
        reading of its time; the comparison, or None when there is none to make."""
        with self._lock:
            self.frames += 1
            tof = self._nearest(stamp_s)
        if tof is None:
            return None
        predicted = cone_reading(depth_m, xn, yn, plane, self.pose, self.step)
        with self._lock:
            self.last_prediction = predicted
            if not (predicted.in_range and MIN_RANGE_M <= tof <= MAX_RANGE_M):
                return None
            comparison = TofComparison(float(stamp_s), tof, predicted.range_m)
            dt = MAX_PAIR_S if self._last_pair is None else max(0.0, stamp_s - self._last_pair)
            alpha = 1.0 - math.exp(-dt / self.time_constant_s)
            self.log_ratio += alpha * (math.log(comparison.ratio) - self.log_ratio)
            self._last_pair, self.last = float(stamp_s), comparison
            self.pairs += 1
            self._residuals = (self._residuals + [comparison.residual_m])[-50:]
        return comparison

    @property
    def state(self) -> str:
        if not self.readings:
            return STATES[0]
        if not self.pairs:
            return STATES[1]
        return STATES[3] if abs(self.log_ratio) > math.log1p(self.tolerance) else STATES[2]

    def report(self) -> Tuple[Dict[str, str], Optional[str]]:
        """(diagnostic values, warning or None) for the node's diagnostics."""
        with self._lock:
            state, ratio = self.state, math.exp(self.log_ratio)
            residual = float(np.median(self._residuals)) if self._residuals else math.nan
            last, predicted = self.last, self.last_prediction
            values = {"tof_state": state, "tof_ratio": "%.3f" % ratio, "tof_residual_m": "%.3f" % residual,
                      "tof_count": str(self.pairs), "tof_readings": str(self.readings),
                      "tof_last_m": "%.3f" % (last.tof_m if last else math.nan),
                      "tof_metric_m": "%.3f" % (predicted.range_m if predicted else math.nan)}
        if state != "DISAGREE":
            return values, None
        return values, ("time-of-flight disagrees with the metric depth: ToF / metric %.2f over the last "
                        "%.1f s (%d pairs, median residual %+.3f m): the camera's height or tilt in the "
                        "extrinsic calibration, or the model's depth of what is ahead, is off"
                        % (ratio, self.time_constant_s, self.pairs, residual))


__all__ = ["TofCheck", "TofComparison", "MAX_PAIR_S", "STATES"]
