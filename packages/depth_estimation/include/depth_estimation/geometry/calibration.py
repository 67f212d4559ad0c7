"""Duckietown calibrations -> the ground plane in the camera's optical frame.

**The convention, as read in Duckietown's sources** (dt-core, branch ``daffy``, commit cc437e83;
lib-dt-computer-vision, branch ``ente``, commit 43efeaaa):

* A daffy extrinsic file (``/data/config/calibrations/camera_extrinsic/<veh>.yaml``) holds
  ``homography``: 9 numbers, row-major, mapping a pixel (u, v, 1) of the **rectified** image, in
  pixels at the camera_info's resolution (640x480 on a DB21), to the ground point (x, y) in metres
  after division by the third coordinate. Ground frame: x forward, y left (z up), origin the robot's
  origin as placed on the calibration mat. Sources: ``packages/ground_projection/src/
  ground_projection_node.py`` (``pixel_msg_to_ground_msg``: the normalised [0, 1] raw segment point
  is scaled by the camera_info width/height, rectified with ``Rectify.rectify_point``, then
  ``pixel2ground`` applies H to the rectified pixel); ``packages/complete_image_pipeline/include/
  image_processing/ground_projection_geometry.py`` (``GroundProjectionGeometry``: "all pixel
  operations assume the pixels are already rectified"; ``pixel2ground`` multiplies H by [u, v, 1]
  although its docstring says normalised; ``estimate_homography`` fits ``cv2.findHomography`` from
  the rectified chessboard corners to ground points x = row * 0.031 + 0.191, y = col * 0.031 - 0.093,
  ``constants.py``); ``.../image_processing/rectification.py`` (``Rectify``: ``rectify_point`` is
  image_geometry's ``rectifyPoint`` = ``cv2.undistortPoints(K, D, R, P)``, ``rectify`` is
  ``initUndistortRectifyMap(K, D, R, P, (W, H))``, so rectified pixels are in P's camera matrix);
  ``.../complete_image_pipeline/calibrate_extrinsics.py`` (the calibration image is resized to 640
  wide, rectified with ``Rectify.rectify`` and passed to ``estimate_homography``; ``save_homography``
  writes ``{"homography": [9 numbers]}``).
* A ``version: '2'`` file (lib-dt-computer-vision ``src/dt_computer_vision/camera/homography.py``,
  ``HomographyToolkit``: ``version``, ``date``, ``homography`` as a 3x3 nested list) is estimated in
  ``camera/calibration/extrinsics/ransac.py`` from rectified corners converted with
  ``CameraModel.pixel2vector`` = ((u - cx) / fx, (v - cy) / fy) using **K** (not P), and dt-core's
  ente ``ground_projection_node._pixel_to_ground`` applies it the same way. So it maps those
  normalised coordinates to the ground and is independent of the resolution; it is turned into the
  daffy form as H_pixels = H_v2 @ inv(K). Its ground frame is the calibration board's
  (``ReferenceFrame.BOARD`` by default), so for version-2 files the plane (height, pitch, roll) is
  right but the scan's bearings follow the board's axes.

From a homography and the intrinsics, :func:`ground_plane` recovers the plane (the camera's height,
pitch and roll, the rigid transform to the ground frame); the raw, distorted pixels of a frame are
undistorted with K and D (:func:`depth_estimation.geometry.camera.pixel_rays`) before they meet it.
A missing file falls back to the default with a warning (:func:`load_extrinsics`, as dt-core's node
falls back to ``default.yaml``); a malformed one is a :class:`CalibrationError` naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import yaml

from depth_estimation.geometry.camera import Intrinsics, intrinsics_from_camera_info, read_intrinsics
from depth_estimation.geometry.files import CalibrationError, read_yaml_mapping
from depth_estimation.geometry.plane import (GroundPlane, homography_from_plane, plane_from_height_pitch,
                                             plane_from_homography, plane_from_normal)
from depth_estimation.io.atomic import atomic_file
from depth_estimation.io.paths import PACKAGE_DIR

__all__ = ["CalibrationError", "Intrinsics", "intrinsics_from_camera_info", "read_intrinsics", "Extrinsics",
           "read_extrinsics", "load_extrinsics", "write_extrinsics", "GroundPlane", "ground_plane",
           "plane_from_height_pitch", "plane_from_normal", "homography_from_plane", "DEFAULT_EXTRINSICS"]

SUPPORTED_VERSIONS = ("1", "2")
#: The package's default extrinsic file (Duckietown's default DB21 homography; see its header).
DEFAULT_EXTRINSICS = os.path.join(PACKAGE_DIR, "config", "calibrations", "camera_extrinsic", "default.yaml")


@dataclass(frozen=True, eq=False)
class Extrinsics:
    """A Duckietown extrinsic calibration: the ground ``homography`` (3x3, read-only; 9 numbers are
    reshaped row-major), the file's format ``version`` ("1": rectified pixels, dt-core daffy; "2":
    K-normalised coordinates, lib-dt-computer-vision), and the ``path`` it was read from."""
    homography: np.ndarray
    version: str = "1"
    path: str = ""

    def __post_init__(self):
        H = np.array(self.homography, np.float64).reshape(3, 3)
        H.setflags(write=False)
        object.__setattr__(self, "homography", H)

    @property
    def H(self) -> np.ndarray:
        return self.homography

    def pixel_homography(self, intrinsics: Intrinsics) -> np.ndarray:
        """The homography from rectified pixels of ``intrinsics`` to the ground (the daffy form)."""
        if self.version == "2":
            H = self.H @ np.linalg.inv(intrinsics.K)
            return H / H[2, 2]
        return self.H


def _homography_numbers(path: str, raw) -> Tuple[float, ...]:
    try:
        array = np.asarray(raw, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CalibrationError("%s: homography is not a list of 9 numbers" % path) from None
    if array.size != 9:
        raise CalibrationError("%s: homography has %d numbers; expected 9 (row-major 3x3)"
                               % (path, array.size))
    if not np.all(np.isfinite(array)):
        raise CalibrationError("%s: homography holds NaN or inf" % path)
    H = array.reshape(3, 3)
    if abs(np.linalg.det(H)) < 1e-12 * max(1.0, float(np.abs(H).max())) ** 3:
        raise CalibrationError("%s: homography is singular (determinant %.3g); calibrate again" % (
            path, np.linalg.det(H)))
    return tuple(float(v) for v in array)


def read_extrinsics(path: str) -> Extrinsics:
    """A Duckietown extrinsic file: ``homography`` (9 numbers, or a 3x3 list with ``version: '2'``).
    CalibrationError naming ``path``: missing, not YAML, merge-conflict markers, no ``homography``,
    wrong length, NaN/inf, singular, unknown version."""
    data = read_yaml_mapping(path, "extrinsic calibration")
    if "homography" not in data:
        raise CalibrationError("%s: no 'homography' key (keys: %s); is it an extrinsic calibration?"
                               % (path, ", ".join(sorted(str(k) for k in data)) or "none"))
    version = str(data.get("version", "1")).strip()
    if version not in SUPPORTED_VERSIONS:
        raise CalibrationError("%s: homography file version %r; supported: %s"
                               % (path, version, ", ".join(SUPPORTED_VERSIONS)))
    return Extrinsics(_homography_numbers(path, data["homography"]), version, path)


def load_extrinsics(path: str, default_path: str = DEFAULT_EXTRINSICS) -> Tuple[Extrinsics, Optional[str]]:
    """(extrinsics, warning): ``path``'s calibration and None; when ``path`` does not exist, the
    ``default_path`` one and a warning for the log and diagnostics (metres from a generic pose). A
    malformed file raises :class:`CalibrationError` (never a fallback: its metres would be wrong)."""
    if os.path.isfile(os.path.expanduser(path)):
        return read_extrinsics(path), None
    if not os.path.isfile(os.path.expanduser(default_path)):
        raise CalibrationError("%s: no such extrinsic calibration file, and no default either (%s); "
                               "calibrate the robot (dts duckiebot calibrate_extrinsics ROBOT)"
                               % (path, default_path))
    warning = ("no extrinsic calibration %s: using the default %s, a generic DB21 camera pose; metric "
               "depth will be off by the robot's own mounting (calibrate: dts duckiebot "
               "calibrate_extrinsics ROBOT)" % (path, default_path))
    return read_extrinsics(default_path), warning


def ground_plane(extrinsics: Extrinsics, intrinsics: Intrinsics) -> GroundPlane:
    """The ground plane of ``extrinsics`` for the camera of ``intrinsics`` (the camera_info the
    calibration was made with: its resolution, K, D, R, P); CalibrationError naming the file when the
    homography does not describe a ground in front of and below this camera."""
    return plane_from_homography(extrinsics.pixel_homography(intrinsics), intrinsics,
                                 origin=extrinsics.path or "homography")


def write_extrinsics(path: str, homography: Sequence[float], comment: Optional[str] = None) -> str:
    """Write ``homography`` (3x3 or 9 numbers, from rectified pixels to the ground) as a daffy
    Duckietown extrinsic file, atomically, normalised to H[2, 2] = 1; ``comment`` is appended as YAML
    comment lines (as Duckietown's ``# Calibrated on ...``). Returns ``path``."""
    H = np.asarray(homography, np.float64).reshape(3, 3)
    if not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        raise CalibrationError("%s: refusing to write a homography with NaN/inf or H[2, 2] = 0" % path)
    H = H / H[2, 2]
    text = yaml.safe_dump({"homography": [float(v) for v in H.reshape(-1)]}, default_flow_style=False)
    if comment:
        text += "".join("# %s\n" % line for line in comment.splitlines())
    with atomic_file(path, "w") as f:
        f.write(text)
    return path
