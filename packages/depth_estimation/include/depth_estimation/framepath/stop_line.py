"""The virtual stop line: the metric obstacle distance as Duckietown's lane controller reads it.

dt-core's ``lane_controller_node`` (daffy) subscribes to ``~obstacle_distance_reading``
(``duckietown_msgs/StopLineReading``: ``stop_line_detected``, ``at_stop_line``, ``stop_line_point``),
slows down while an obstacle stop line is detected and stops while ``at_stop_line`` is true;
``duckietown_demos``' ``master.launch`` feeds it from ``road_anomaly_watcher/obstacle_distance``.
:func:`virtual_stop_line` turns one frame's obstacle distance (the closest point in the node's
corridor ahead, :mod:`depth_estimation.geometry.obstacles`) into that reading:

- nothing at all unless the metric state is OK or HOLD (never from a fit the node does not trust);
- ``detected`` when an obstacle is within the corridor's range (a finite distance);
- ``distance_m``: that distance in metres as a float (0.0 when none is detected, as dt-core's
  ``vehicle_filter_node`` publishes it), the message's ``stop_line_point.x``;
- ``at_stop_line`` when that distance is below ``offset_m`` (``virtual_stop_line_offset``).

:func:`stop_speed` is the lane controller's speed for such a reading (for the simulated closed loop).
Nothing here needs ROS.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

TRUSTED_STATES = ("OK", "HOLD")  # the metric states whose metres the node publishes


class StopLine(NamedTuple):
    detected: bool
    at_stop_line: bool
    distance_m: float  # metres ahead (stop_line_point.x); 0.0 when nothing is detected


def virtual_stop_line(distance_m: float, state: str, offset_m: float) -> Optional[StopLine]:
    """The reading of one frame (see the module docstring); None when it must not be published."""
    if state not in TRUSTED_STATES or distance_m is None or math.isnan(distance_m):
        return None
    if not math.isfinite(distance_m):
        return StopLine(False, False, 0.0)
    distance = float(distance_m)
    return StopLine(True, distance < offset_m, distance)


def stop_speed(reading: Optional[StopLine], v_bar: float, slowdown_start_m: float, slowdown_end_m: float,
               obstacle_factor: float) -> float:
    """Forward speed (m/s) of dt-core's ``lane_controller_node`` (daffy) for an obstacle reading: 0 at
    the stop line; while one is detected, its stop-line slowdown (``v_bar`` at ``slowdown_start_m`` and
    beyond, down linearly to ``v_bar / 2`` at ``slowdown_end_m``, never below) times
    ``obstacle_factor`` (the node scales the command by 0.25 for obstacle stop lines); else ``v_bar``.
    ``reading``: the last one received (the node keeps it until the next), None before the first."""
    if reading is None or not reading.detected:
        return v_bar
    if reading.at_stop_line:
        return 0.0
    d, d1, d2 = reading.distance_m, slowdown_start_m, slowdown_end_m
    c = (0.5 * (d1 - d) + (d - d2)) / (d1 - d2)
    return max(v_bar / 2.0, min(v_bar, v_bar * c)) * obstacle_factor
