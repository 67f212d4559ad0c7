"""The camera's intrinsics (ROS camera_info / Duckietown intrinsic files) and the viewing ray of
every raw pixel, distortion included.

A Duckiebot camera publishes distorted (``plumb_bob``) frames; the depth model runs on them as
they are. :func:`pixel_rays` therefore undistorts every raw pixel coordinate with OpenCV
(``cv2.undistortPointsIter`` with K and D, as ``image_geometry.PinholeCameraModel.rectifyPoint``
and dt-core's ``Rectify.rectify_point`` do) to the normalised ray (x/z, y/z, 1) in the camera's
optical frame (x right, y down, z forward). The rectified image of ROS (the one Duckietown's
homography is defined on) is that ray rotated by R and projected with P: rectified pixel =
P[:3, :3] @ R @ ray.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence, Tuple

import cv2
import numpy as np

from depth_estimation.geometry.files import CalibrationError, read_yaml_mapping

#: Distortion models read with OpenCV's pinhole model (ROS names); ``equidistant`` uses cv2.fisheye.
PINHOLE_MODELS = ("plumb_bob", "rational_polynomial", "")
FISHEYE_MODELS = ("equidistant", "fisheye")
#: How many distortion coefficients each model takes (ROS image_geometry; OpenCV's pinhole model for "").
D_SIZES = {"plumb_bob": (5,), "rational_polynomial": (8,), "": (4, 5, 8, 12, 14), "equidistant": (4,),
           "fisheye": (4,)}


@dataclass(frozen=True)
class Intrinsics:
    """A camera's intrinsics at ``width`` x ``height``: K (fx, fy, cx, cy), distortion D of ``model``,
    and the rectification R (9, row-major) and projection P (12, row-major) of ROS' camera_info
    (None: R = identity, P = [K | 0]). Hashable, so per-calibration results can be cached."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    D: Tuple[float, ...] = ()
    model: str = "plumb_bob"
    P: Optional[Tuple[float, ...]] = None
    R: Optional[Tuple[float, ...]] = None

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def P_matrix(self) -> np.ndarray:
        """3x4 projection of the rectified image ([K | 0] when camera_info has none)."""
        if self.P is None:
            return np.hstack([self.K, np.zeros((3, 1))])
        return np.array(self.P, np.float64).reshape(3, 4)

    @property
    def R_matrix(self) -> np.ndarray:
        return np.eye(3) if self.R is None else np.array(self.R, np.float64).reshape(3, 3)

    @property
    def K_rectified(self) -> np.ndarray:
        """The 3x3 camera matrix of the rectified image (P[:3, :3])."""
        return self.P_matrix[:, :3].copy()

    @property
    def distorted(self) -> bool:
        return any(abs(v) > 0 for v in self.D)

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera for frames of ``width`` x ``height`` (a resized stream), as ROS'
        image_proc resize scales camera_info: fx, cx (and P's first row) by width ratio, fy, cy by
        height ratio; distortion is unchanged (it acts on normalised coordinates)."""
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise CalibrationError("cannot scale intrinsics to %dx%d" % (width, height))
        sx, sy = width / float(self.width), height / float(self.height)
        P = None
        if self.P is not None:
            p = np.array(self.P, np.float64).reshape(3, 4)
            p[0] *= sx
            p[1] *= sy
            P = tuple(float(v) for v in p.reshape(-1))
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
                       width=width, height=height, P=P)

    def for_frame(self, height: int, width: int) -> "Intrinsics":
        """Self when the frame has this size, else :meth:`scaled`."""
        if (int(width), int(height)) == (self.width, self.height):
            return self
        return self.scaled(width, height)


def _field(source: Any, *names: str) -> Any:
    for name in names:
        if isinstance(source, dict):
            if name in source:
                return source[name]
        elif hasattr(source, name):
            return getattr(source, name)
    return None


def _numbers(value: Any, what: str, sizes: Sequence[int], origin: str) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    if isinstance(value, dict):  # a Duckietown / ROS YAML matrix: {rows, cols, data}
        value = value.get("data")
    try:
        array = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CalibrationError("%s: %s is not a list of numbers" % (origin, what)) from None
    if sizes and array.size not in sizes:
        raise CalibrationError("%s: %s has %d numbers; expected %s"
                               % (origin, what, array.size, " or ".join(str(s) for s in sizes)))
    if not np.all(np.isfinite(array)):
        raise CalibrationError("%s: %s holds NaN or inf" % (origin, what))
    return tuple(float(v) for v in array)


def intrinsics_from_camera_info(msg: Any, origin: str = "camera_info") -> Intrinsics:
    """:class:`Intrinsics` of a sensor_msgs/CameraInfo-like object (``K``/``D``/``P``/``R``/``width``/
    ``height``/``distortion_model``, or their lower-case names as in ROS 2 and rosbags) or of a dict
    read from a Duckietown / ROS intrinsic YAML (``camera_matrix``, ``distortion_coefficients``,
    ``projection_matrix``, ``rectification_matrix``, ``image_width``, ``image_height``).
    ``origin`` names the source in errors (a file path)."""
    K = _numbers(_field(msg, "K", "k", "camera_matrix"), "camera matrix K", (9,), origin)
    if K is None:
        raise CalibrationError("%s: no camera matrix (K / camera_matrix)" % origin)
    width = _field(msg, "width", "image_width")
    height = _field(msg, "height", "image_height")
    try:
        width, height = int(width), int(height)
    except (TypeError, ValueError):
        raise CalibrationError("%s: image size %r x %r is not two integers"
                               % (origin, width, height)) from None
    fx, fy, cx, cy = K[0], K[4], K[2], K[5]
    if not (fx > 0 and fy > 0):
        raise CalibrationError("%s: focal lengths fx=%g fy=%g: the camera is not calibrated (K must have "
                               "positive fx, fy)" % (origin, fx, fy))
    if width <= 0 or height <= 0:
        raise CalibrationError("%s: image size %dx%d" % (origin, width, height))
    D = _numbers(_field(msg, "D", "d", "distortion_coefficients"), "distortion D", (), origin) or ()
    P = _numbers(_field(msg, "P", "p", "projection_matrix"), "projection P", (12,), origin)
    if P is not None and not (P[0] > 0 and P[5] > 0):
        P = None  # an all-zero P (uncalibrated rectification): the rectified image uses K
    R = _numbers(_field(msg, "R", "r", "rectification_matrix"), "rectification R", (9,), origin)
    if R is not None and abs(np.linalg.det(np.reshape(R, (3, 3))) - 1.0) > 1e-3:
        R = None  # all zeros in an unrectified camera_info: identity
    model = str(_field(msg, "distortion_model") or ("plumb_bob" if D else ""))
    if model not in PINHOLE_MODELS + FISHEYE_MODELS:
        raise CalibrationError("%s: distortion model %r; supported: plumb_bob, rational_polynomial, "
                               "equidistant" % (origin, model))
    if D and len(D) not in D_SIZES[model]:
        raise CalibrationError("%s: distortion %r with %d coefficients; it takes %s" % (
            origin, model or "(no model)", len(D), " or ".join(str(n) for n in D_SIZES[model])))
    return Intrinsics(fx, fy, cx, cy, width, height, D, model, P, R)


def read_intrinsics(path: str) -> Intrinsics:
    """A Duckietown intrinsic calibration file (``/data/config/calibrations/camera_intrinsic/<veh>.yaml``,
    ROS camera_info YAML) as :class:`Intrinsics`; :class:`CalibrationError` naming ``path`` otherwise."""
    return intrinsics_from_camera_info(read_yaml_mapping(path, "intrinsic calibration"), origin=path)


def camera_info_problem(info: Any, height: int, width: int) -> Optional[str]:
    """Why a camera_info (or :class:`Intrinsics`) cannot describe a ``height`` x ``width`` image, or None
    when it can. The one policy: a camera_info describes frames of its own size only (ROS' image_proc
    resize scales camera_info with the image); nothing that needs it is made from a rescaled guess."""
    if (int(info.height), int(info.width)) != (int(height), int(width)):
        return "camera_info is %dx%d but the frame is %dx%d" % (info.width, info.height, width, height)
    return None


def _undistort(points: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Raw pixel coordinates (N x 2) -> normalised undistorted (x/z, y/z), N x 2 float64."""
    src = points.reshape(-1, 1, 2).astype(np.float64)
    K, D = intrinsics.K, np.asarray(intrinsics.D, np.float64)
    if intrinsics.model in FISHEYE_MODELS:
        return cv2.fisheye.undistortPoints(src, K, D[:4]).reshape(-1, 2)
    if not intrinsics.distorted:
        return ((points - [intrinsics.cx, intrinsics.cy]) / [intrinsics.fx, intrinsics.fy]).astype(np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-9)
    if hasattr(cv2, "undistortPointsIter"):
        out = cv2.undistortPointsIter(src, K, D, None, None, criteria)
    else:  # older OpenCV: its default 5 iterations
        out = cv2.undistortPoints(src, K, D)
    return out.reshape(-1, 2)


def undistort_pixels(u: np.ndarray, v: np.ndarray, intrinsics: Intrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised ray coordinates (x/z, y/z) in the optical frame of raw pixels (u, v)."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    out = _undistort(np.stack([u.reshape(-1), v.reshape(-1)], axis=1), intrinsics)
    return out[:, 0].reshape(u.shape), out[:, 1].reshape(v.shape)


def pixel_rays(intrinsics: Intrinsics, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """(xn, yn), each float32 ``height`` x ``width``: the ray (xn, yn, 1) of every raw pixel of a frame
    of that size in the optical frame, distortion removed (read-only). Computed on each call: whoever
    calls it per frame keeps a :class:`FrameRays` (the module holds no frame-sized arrays)."""
    cam = intrinsics.for_frame(height, width)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    xn, yn = undistort_pixels(u, v, cam)
    xn, yn = xn.astype(np.float32), yn.astype(np.float32)
    xn.setflags(write=False)
    yn.setflags(write=False)
    return xn, yn


class FrameRays:
    """:func:`pixel_rays` of one camera for the frame size last asked (its owner holds it; a new size
    replaces the old arrays, so one stream keeps one pair)."""

    def __init__(self, intrinsics: Intrinsics):
        self.intrinsics = intrinsics
        self._size: Optional[Tuple[int, int]] = None
        self._rays: Tuple[np.ndarray, np.ndarray] = (np.empty(0), np.empty(0))

    def __call__(self, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
        if self._size != (int(height), int(width)):
            self._size = (int(height), int(width))
            self._rays = pixel_rays(self.intrinsics, *self._size)
        return self._rays


def project_ray(intrinsics: Intrinsics, ray: Sequence[float]) -> Tuple[float, float]:
    """The raw (distorted) pixel (u, v) where the optical-frame direction ``ray`` (z > 0) images."""
    point = np.asarray(ray, np.float64).reshape(1, 1, 3)
    K, D = intrinsics.K, np.asarray(intrinsics.D, np.float64)
    if intrinsics.model in FISHEYE_MODELS:
        out, _ = cv2.fisheye.projectPoints(point, np.zeros(3), np.zeros(3), K, D[:4])
    else:
        out, _ = cv2.projectPoints(point, np.zeros(3), np.zeros(3), K, D if intrinsics.distorted else None)
    u, v = out.reshape(2)
    return float(u), float(v)
