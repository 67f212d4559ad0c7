"""The DB21M's front time-of-flight sensor, and the reading it would give in a depth map.

**The sensor, as Duckietown's driver publishes it** (dt-duckiebot-interface, branch ``daffy``,
commit 974408f2: ``packages/tof_driver/src/tof_node.py``, ``include/tof_accuracy/tof_accuracy.py``,
``config/tof_node/front_center.yaml``, ``launch/tof_node.launch``): a VL53L0X, node
``/<veh>/front_center_tof_driver_node``, topic ``~range`` (``sensor_msgs/Range``, INFRARED), frame
``<veh>/tof/front_center``, ``field_of_view`` 25 deg, ``min_range`` 0.05 m, ``max_range`` 1.2 m
(mode BETTER: 66 ms timing budget, so the configured 20 Hz becomes 15 Hz), stamped when read;
``range`` is the raw reading in metres, not clamped: past the max range or without a return the
sensor gives its out-of-range code, 8190 mm (:data:`OUT_OF_RANGE_M`).

**Its pose** (:class:`TofPose`, the node's ``~tof_pose``): from the DB21M's URDF in the same
repository (``packages/duckiebot_interface/urdf/duckiebot.urdf.xacro``, model DB21M): the sensor is
0.022 m ahead of the front bumper and 0.010 m below it (bumper 0.057 m ahead of the top plate, top
plate 0.076 m above the footprint), its axis along the robot's x (no rotation); the camera's
optical centre is 0.058 + 0.006 + 0.017 cos(0.26) m ahead of the top plate and 0.028 - 0.017
sin(0.26) m above it. So the sensor sits 0.0014 m behind and 0.0336 m below the camera's optical
centre, looking straight ahead, parallel to the road. The offset is along the robot's axes (x
forward, y left, z up: the ground frame of the calibration), so the camera's own tilt comes from
its calibration, not from the URDF's nominal 0.26 rad.

**The reading model** (:func:`cone_reading`, used both to simulate the sensor on exact depth and
to predict its reading from the node's metric depth): every depth pixel whose point lies in the
sensor's cone (half angle 12.5 deg about its axis, seen from the sensor's origin) returns light
with a weight 1 / r^2 (r: distance from the sensor), times the cosine of the incidence angle for
road points (their normal is the road's; other surfaces are taken as facing the sensor). The
reading is the weighted median of r; when the mean weight over the cone's pixels (the sky and
depth beyond the map's range return nothing) is below that of a wall filling the cone at 2 m
(:data:`SIGNAL_MIN`), the sensor sees nothing: :data:`OUT_OF_RANGE_M`. So the bare road (signal
about 0.15 for the simulated robot) reads out of range, a wall or a Duckiebot ahead within the
range reads its distance, a duckie from about 0.5 m. Not measured against a real VL53L0X: its
beam profile and the road's infrared reflectance are not modelled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from depth_estimation.geometry.plane import GroundPlane

TOPIC = "front_center_tof_driver_node/range"  # under the robot's namespace
FRAME = "tof/front_center"  # under the robot's name: <veh>/tof/front_center
FOV_DEG = 25.0
MIN_RANGE_M, MAX_RANGE_M = 0.05, 1.2
RATE_HZ = 15.0
OUT_OF_RANGE_M = 8.19
SIGNAL_MIN = 1.0 / 2.0 ** 2  # a wall filling the cone at 2 m: the weakest return the model detects
#: The driver's fixed sensor_msgs/Range fields (radiation_type 1 = INFRARED).
RANGE_FIELDS = dict(radiation_type=1, field_of_view=math.radians(FOV_DEG), min_range=MIN_RANGE_M,
                    max_range=MAX_RANGE_M)
GROUND_MARGIN_M = 0.01  # points lower than this above the road are road (incidence from its normal)


def frame_id(veh: str) -> str:
    """The sensor's frame as the driver names it: ``<veh>/tof/front_center``."""
    return "%s/%s" % (veh, FRAME) if veh else FRAME


@dataclass(frozen=True)
class TofPose:
    """The sensor relative to the camera's optical centre, along the robot's axes (x forward, y left, z
    up; metres), and its axis' pitch (positive down) and yaw (positive left) from the robot's x axis
    in degrees. Defaults: the DB21M's URDF (module docstring)."""
    forward_m: float = -0.0014
    left_m: float = 0.0
    up_m: float = -0.0336
    pitch_deg: float = 0.0
    yaw_deg: float = 0.0

    @classmethod
    def from_list(cls, values: Sequence[float]) -> "TofPose":
        """[forward, left, up, pitch_deg, yaw_deg] (the node's ``~tof_pose``); ValueError otherwise."""
        if not isinstance(values, (list, tuple)) or len(values) != 5:
            raise ValueError("expected [forward_m, left_m, up_m, pitch_deg, yaw_deg], got %r" % (values,))
        numbers = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise ValueError("expected 5 finite numbers, got %r" % (values,))
            numbers.append(float(v))
        if any(abs(v) > 1.0 for v in numbers[:3]) or any(abs(v) >= 90.0 for v in numbers[3:]):
            raise ValueError("offsets must be within 1 m and angles within 90 deg, got %r" % (values,))
        return cls(*numbers)

    def in_camera(self, plane: GroundPlane) -> Tuple[np.ndarray, np.ndarray]:
        """(origin, unit axis) of the sensor in the camera's optical frame, for the camera whose
        ground plane (calibration) is ``plane``."""
        R = plane.R_ground_from_camera  # ground = R @ camera, so camera = R.T @ ground
        p, y = math.radians(self.pitch_deg), math.radians(self.yaw_deg)
        axis = np.array([math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), -math.sin(p)])
        return R.T @ np.array([self.forward_m, self.left_m, self.up_m]), R.T @ axis


@dataclass(frozen=True)
class ConeReading:
    """What the sensor would read (``range_m``; :data:`OUT_OF_RANGE_M` when it sees nothing, NaN when
    its cone is not in the depth map at all), its mean return ``signal`` (1/m^2) and the number of
    depth pixels in the cone (``pixels``)."""
    range_m: float
    signal: float
    pixels: int

    @property
    def in_range(self) -> bool:
        return MIN_RANGE_M <= self.range_m <= MAX_RANGE_M


def cone_reading(depth_m: np.ndarray, xn: np.ndarray, yn: np.ndarray, plane: GroundPlane,
                 pose: TofPose = TofPose(), step: int = 1) -> ConeReading:
    """The reading of the sensor at ``pose`` in the depth map ``depth_m`` (metres along the optical
    axis; 0, NaN or inf = nothing there) whose pixels have the normalised rays ``xn``, ``yn`` (HxW,
    :class:`depth_estimation.geometry.camera.FrameRays`), for the camera of ``plane``; every
    ``step``-th pixel in each direction (module docstring: the model)."""
    origin, axis = pose.in_camera(plane)
    z = np.asarray(depth_m, np.float32)[::step, ::step]
    x, y = np.asarray(xn, np.float32)[::step, ::step], np.asarray(yn, np.float32)[::step, ::step]
    seen = np.isfinite(z) & (z > 0)
    z = np.where(seen, z, np.float32(0.0))
    o = origin.astype(np.float32)
    # from the sensor to each point (to the pixel's direction where nothing is seen)
    vx, vy = np.where(seen, x * z - o[0], x), np.where(seen, y * z - o[1], y)
    vz = np.where(seen, z - o[2], np.float32(1.0))
    r = np.sqrt(vx * vx + vy * vy + vz * vz)
    inside = (vx * axis[0] + vy * axis[1] + vz * axis[2]) >= math.cos(math.radians(FOV_DEG / 2.0)) * r
    pixels = int(np.count_nonzero(inside))
    if pixels == 0:
        return ConeReading(math.nan, 0.0, 0)
    hit = inside & seen
    if not np.any(hit):
        return ConeReading(OUT_OF_RANGE_M, 0.0, pixels)
    n = plane.normal_vector
    v = np.stack([vx[hit], vy[hit], vz[hit]], axis=1).astype(np.float64)
    rh = r[hit].astype(np.float64)
    points = v + origin
    height = plane.distance - points @ n
    incidence = np.where(height < GROUND_MARGIN_M, np.abs(v @ n) / rh, 1.0)
    weights = incidence / rh ** 2
    signal = float(weights.sum()) / pixels
    if signal < SIGNAL_MIN:
        return ConeReading(OUT_OF_RANGE_M, signal, pixels)
    return ConeReading(weighted_median(rh, weights), signal, pixels)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value at half the total weight (the lower one on a tie)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))])


__all__ = ["TofPose", "ConeReading", "cone_reading", "weighted_median", "TOPIC", "FRAME", "FOV_DEG",
           "MIN_RANGE_M", "MAX_RANGE_M", "RANGE_FIELDS", "frame_id", "RATE_HZ", "OUT_OF_RANGE_M",
           "SIGNAL_MIN"]
