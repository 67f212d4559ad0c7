"""Does a calibration describe a Duckiebot's camera? Checks before any metre is published.

A homography and a camera_info can be well-formed and still wrong: a fleet file turned 180 degrees
(the ground behind the robot), flipped upside down (the camera looking up), another robot's focal
length (fx = 11454 on a 640-pixel frame: a 3-degree view), distortion coefficients of another lens.
:func:`check_intrinsics` and :func:`check_pose` raise :class:`CalibrationError` for what no camera
on a Duckiebot can be (the node stops, or publishes nothing metric), and return one warning line
for each value outside a DB21's range (the node says it in the log and in diagnostics);
:func:`calibration_values` gives the numbers for diagnostics.

The DB21 ranges: the camera sits 0.10-0.13 m above the road looking 7-20 degrees down (the two
real calibrations in assets/calibrations: 0.125 m / 10.1 deg and 0.122 m / 15.2 deg; Duckietown's
default file 0.119 m / 7.0-17.7 deg depending on the intrinsics; the simulator 0.108 m / 19.15 deg),
with a wide lens: about 115 degrees across the middle row once undistorted (fx ~ 320 at 640x480).
The bounds below leave room for other mounts and lenses without letting a mistake through.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from depth_estimation.geometry.camera import Intrinsics, undistort_pixels
from depth_estimation.geometry.files import CalibrationError
from depth_estimation.geometry.plane import GroundPlane

DB21_HEIGHT_M = (0.06, 0.20)  # camera above the road
DB21_PITCH_DEG = (2.0, 35.0)  # optical axis below the horizontal
DB21_HFOV_DEG = (60.0, 170.0)  # horizontal field of view, distortion removed
MAX_ROLL_DEG = 10.0
MAX_HEADING_DEG = 20.0  # optical axis' horizontal direction away from the robot's x axis
ANY_HFOV_DEG = (20.0, 179.0)  # outside: not a camera that can see the road in front of a Duckiebot
MAX_FOCAL_RATIO = 1.25  # fy / fx (square pixels: 1)


def _across(intrinsics: Intrinsics, samples: int = 65) -> Tuple[np.ndarray, np.ndarray]:
    """Undistorted x/z along the middle row and y/z along the middle column, edge to edge."""
    w, h = intrinsics.width, intrinsics.height
    u = np.linspace(0.0, w - 1.0, samples)
    v = np.linspace(0.0, h - 1.0, samples)
    x, _ = undistort_pixels(u, np.full(samples, intrinsics.cy), intrinsics)
    _, y = undistort_pixels(np.full(samples, intrinsics.cx), v, intrinsics)
    return x, y


def horizontal_fov_deg(intrinsics: Intrinsics) -> float:
    """The horizontal field of view through the principal point, distortion removed (degrees)."""
    x, _ = _across(intrinsics)
    return math.degrees(math.atan(x[-1]) - math.atan(x[0]))


def check_intrinsics(intrinsics: Intrinsics, origin: str) -> List[str]:
    """Warnings for intrinsics unlikely on a DB21; CalibrationError naming ``origin`` for ones that
    cannot describe a camera at all at their own resolution."""
    w, h = intrinsics.width, intrinsics.height
    where = "%s (%dx%d, fx %.1f, fy %.1f, cx %.1f, cy %.1f, D %s)" % (
        origin, w, h, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy,
        [round(d, 3) for d in intrinsics.D])
    if not (0 <= intrinsics.cx < w and 0 <= intrinsics.cy < h):
        raise CalibrationError("%s: the principal point is outside the %dx%d frame" % (where, w, h))
    x, y = _across(intrinsics)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.diff(x) > 0)
            and np.all(np.diff(y) > 0)):
        raise CalibrationError("%s: undistorting with these coefficients does not give rays in order "
                               "across the image (the distortion folds or cannot be inverted); they belong "
                               "to another lens or model" % where)
    hfov = horizontal_fov_deg(intrinsics)
    if not ANY_HFOV_DEG[0] <= hfov <= ANY_HFOV_DEG[1]:
        raise CalibrationError("%s: a horizontal field of view of %.1f deg; a Duckiebot camera sees about "
                               "115 (these intrinsics are for another camera or another resolution)"
                               % (where, hfov))
    warnings = []
    if not DB21_HFOV_DEG[0] <= hfov <= DB21_HFOV_DEG[1]:
        warnings.append("%s: horizontal field of view %.1f deg, outside a DB21's %g-%g deg; is it this "
                        "robot's intrinsic calibration?" % (where, hfov, *DB21_HFOV_DEG))
    ratio = intrinsics.fy / intrinsics.fx
    if not 1.0 / MAX_FOCAL_RATIO <= ratio <= MAX_FOCAL_RATIO:
        warnings.append("%s: fy / fx = %.2f; a DB21's pixels are square (about 1)" % (where, ratio))
    return warnings


def heading_deg(plane: GroundPlane) -> float:
    """Direction of the optical axis on the ground, from the ground frame's x axis (degrees, left +)."""
    forward = plane.R_ground_from_camera[:, 2]
    return math.degrees(math.atan2(forward[1], forward[0]))


def check_pose(plane: GroundPlane, origin: str) -> List[str]:
    """Warnings for a camera pose unlikely on a DB21; CalibrationError naming ``origin`` when the
    ground is not in front of and below the camera (a homography turned or flipped)."""
    height, pitch, roll, heading = plane.height_m, plane.pitch_deg, plane.roll_deg, heading_deg(plane)
    pose = "camera %.3f m above the ground, pitch %.1f deg, roll %.1f deg, heading %.1f deg" % (
        height, pitch, roll, heading)
    if pitch < 0.0 or abs(roll) > 90.0:
        raise CalibrationError("%s: the camera looks up (%s): the ground would be in the top of the image "
                               "(a homography for a flipped image?)" % (origin, pose))
    if abs(heading) > 90.0:
        raise CalibrationError("%s: the ground in front of the robot is behind the camera (%s: the camera "
                               "looks backwards; a homography turned 180 degrees?)" % (origin, pose))
    warnings = []
    if not DB21_HEIGHT_M[0] <= height <= DB21_HEIGHT_M[1]:
        warnings.append("%s: %s; a DB21's camera is %g-%g m above the road"
                        % (origin, pose, *DB21_HEIGHT_M))
    if not DB21_PITCH_DEG[0] <= pitch <= DB21_PITCH_DEG[1]:
        warnings.append("%s: %s; a DB21's camera looks %g-%g deg down" % (origin, pose, *DB21_PITCH_DEG))
    if abs(roll) > MAX_ROLL_DEG:
        warnings.append("%s: %s; a DB21's camera is level within %g deg" % (origin, pose, MAX_ROLL_DEG))
    if abs(heading) > MAX_HEADING_DEG:
        warnings.append("%s: %s; a DB21's camera looks straight ahead (within %g deg)"
                        % (origin, pose, MAX_HEADING_DEG))
    return warnings


def calibration_values(plane: GroundPlane, intrinsics: Intrinsics) -> Dict[str, str]:
    """The calibration's numbers for diagnostics."""
    return {"camera_height_m": "%.3f" % plane.height_m, "camera_pitch_deg": "%.1f" % plane.pitch_deg,
            "camera_roll_deg": "%.1f" % plane.roll_deg, "camera_heading_deg": "%.1f" % heading_deg(plane),
            "camera_hfov_deg": "%.1f" % horizontal_fov_deg(intrinsics)}
