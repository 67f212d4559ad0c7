"""What a robot needs from metric depth: a point cloud, a laser scan and the distance to the closest
obstacle ahead, all vectorised numpy.

Points are back-projected with the camera's undistorted pixel rays (X = z * (xn, yn, 1) in the optical
frame) and moved to the ground frame of the :class:`~depth_estimation.geometry.plane.GroundPlane`
(x forward, y left, z up = height above the ground). An obstacle is a point more than
``min_height_m`` above the ground (the ground itself, and noise on it, are not). The scan follows
REP 117 (sensor_msgs/LaserScan): ranges in metres from the ground frame's origin, measured in the
ground plane, ``+inf`` where a bearing has no obstacle within ``range_max``; bearings counter-clockwise
from x (left positive), ``angle_increment = (angle_max - angle_min) / (n_bins - 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from depth_estimation.geometry.camera import FrameRays, Intrinsics, pixel_rays
from depth_estimation.geometry.plane import GroundPlane


@dataclass
class Scan:
    """A sensor_msgs/LaserScan's numbers: ``ranges[i]`` at ``angle_min + i * angle_increment``."""
    angle_min: float
    angle_max: float
    angle_increment: float
    ranges: np.ndarray
    range_min: float
    range_max: float


def _rays(depth_m: np.ndarray, intrinsics: Intrinsics, step: int,
          rays: Optional[FrameRays] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, xn, yn) of every ``step``-th pixel with a finite positive depth, flattened; ``rays``: the
    caller's :class:`FrameRays` of ``intrinsics`` (computed here when None)."""
    depth_m = np.asarray(depth_m, np.float32)
    if depth_m.ndim != 2:
        raise ValueError("depth must be HxW, got shape %s" % (depth_m.shape,))
    step = max(1, int(step))
    height, width = depth_m.shape
    xn, yn = pixel_rays(intrinsics, height, width) if rays is None else rays(height, width)
    z = depth_m[::step, ::step].reshape(-1)
    xn, yn = xn[::step, ::step].reshape(-1), yn[::step, ::step].reshape(-1)
    with np.errstate(invalid="ignore"):
        keep = z > 0  # False for NaN
    return z[keep], xn[keep], yn[keep]


def points_camera(depth_m: np.ndarray, intrinsics: Intrinsics, step: int = 1,
                  rays: Optional[FrameRays] = None) -> np.ndarray:
    """float32 N x 3 points (x right, y down, z forward, metres) of every ``step``-th pixel of
    ``depth_m`` (HxW z-depth of a raw frame; NaN / <= 0 = no point), distortion removed."""
    z, xn, yn = _rays(depth_m, intrinsics, step, rays)
    return np.stack([xn * z, yn * z, z], axis=1).astype(np.float32)


def points_ground(depth_m: np.ndarray, plane: GroundPlane, intrinsics: Intrinsics,
                  step: int = 1,
                  rays: Optional[FrameRays] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) float32 arrays of the :func:`points_camera` points in the ground frame (x forward,
    y left, z = height above the ground)."""
    z, xn, yn = _rays(depth_m, intrinsics, step, rays)
    R, t = plane.R_ground_from_camera.astype(np.float32), plane.t.astype(np.float32)
    # X_ground = R @ (z * (xn, yn, 1)) + t, row by row without building the N x 3 array
    out = []
    for row in range(3):
        out.append(z * (R[row, 0] * xn + R[row, 1] * yn + R[row, 2]) + t[row])
    return out[0], out[1], out[2]


def laser_scan(depth_m: np.ndarray, plane: GroundPlane, intrinsics: Intrinsics, min_height_m: float = 0.03,
               max_height_m: float = 0.5, angle_min: float = -math.pi / 4, angle_max: float = math.pi / 4,
               n_bins: int = 91, range_min: float = 0.05, range_max: float = 5.0, step: int = 4,
               rays: Optional[FrameRays] = None) -> Scan:
    """The closest obstacle point per bearing (see the module docstring): points between ``min_height_m``
    and ``max_height_m`` above the ground, ``range_min`` .. ``range_max`` from the origin, binned into
    ``n_bins`` bearings from ``angle_min`` to ``angle_max`` (radians); ``step`` decimates the pixels."""
    if n_bins < 2 or not angle_max > angle_min or not range_max > range_min >= 0:
        raise ValueError("laser_scan: need n_bins >= 2, angle_max > angle_min, range_max > range_min >= 0")
    increment = (angle_max - angle_min) / (n_bins - 1)
    ranges = np.full(n_bins, np.inf, np.float32)
    x, y, height = points_ground(depth_m, plane, intrinsics, step, rays)
    r = np.hypot(x, y)
    keep = (height > min_height_m) & (height < max_height_m) & (r >= range_min) & (r <= range_max)
    if keep.any():
        bins = np.rint((np.arctan2(y[keep], x[keep]) - angle_min) / increment).astype(np.int64)
        inside = (bins >= 0) & (bins < n_bins)
        np.minimum.at(ranges, bins[inside], r[keep][inside])
    return Scan(float(angle_min), float(angle_min + increment * (n_bins - 1)), float(increment), ranges,
                float(range_min), float(range_max))


def obstacle_distance(depth_m: np.ndarray, plane: GroundPlane, intrinsics: Intrinsics,
                      corridor_width_m: float = 0.2, min_height_m: float = 0.03, max_range_m: float = 2.0,
                      max_height_m: float = 0.5, step: int = 4, rays: Optional[FrameRays] = None) -> float:
    """The forward distance x (metres, from the ground frame's origin) of the closest obstacle point in
    the corridor |y| <= ``corridor_width_m`` / 2 ahead (0 < x <= ``max_range_m``), between
    ``min_height_m`` and ``max_height_m`` above the ground; ``inf`` when there is none."""
    x, y, height = points_ground(depth_m, plane, intrinsics, step, rays)
    keep = ((np.abs(y) <= corridor_width_m / 2.0) & (x > 0) & (x <= max_range_m)
            & (height > min_height_m) & (height < max_height_m))
    return float(x[keep].min()) if keep.any() else math.inf
