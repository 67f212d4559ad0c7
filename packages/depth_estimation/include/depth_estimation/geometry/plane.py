"""The ground plane in the camera's optical frame, and its two-way link with a ground homography.

Frames: the camera's optical frame (x right, y down, z forward, metres) and the ground frame (x
forward, y left, z up, z = 0 on the ground; origin the homography's origin, or the point under the
camera for :func:`plane_from_height_pitch`). A ground point g = (x, y, 0) is seen by the camera at
X = R_cg g + t_cg with R_cg = R_ground_from_camera^T; a rectified pixel is p ~ K_r R_rect X
(K_r = P[:3, :3]), so the homography from rectified pixels to the ground is
H = (K_r R_rect [r1 r2 t_cg])^-1 up to scale: :func:`homography_from_plane` builds it and
:func:`plane_from_homography` takes it apart (the classic planar decomposition, as
lib-dt-computer-vision's ``pose_from_homography``, with the sign fixed so that the bottom of the
image sees the ground in front of the camera and the camera is above it, then refined with
``cv2.solvePnP`` on the ground points the homography gives the lower image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from depth_estimation.geometry.camera import Intrinsics, project_ray
from depth_estimation.geometry.files import CalibrationError

#: Optical frame axes in the ground frame for a level camera looking along +x: x_opt = -y, y_opt = -z,
#: z_opt = +x (columns).
LEVEL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: A homography whose first two columns (after the intrinsics) differ in length by more than this
#: ratio, or are further from orthogonal than this cosine, does not fit the camera's intrinsics.
MAX_COLUMN_RATIO = 1.2
MAX_COLUMN_COSINE = 0.25


def _tuple(values) -> Tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, np.float64).reshape(-1))


@dataclass(frozen=True)
class GroundPlane:
    """The ground in the camera's optical frame: unit ``normal`` pointing from the camera towards the
    ground and ``distance`` d, so n . X = d for ground points X (d = the camera's height), plus the
    rigid transform to the ground frame: X_ground = R_ground_from_camera @ X_camera + t
    (``rotation`` row-major, ``translation`` = t, the camera's centre in the ground frame)."""
    normal: Tuple[float, float, float]
    distance: float
    rotation: Tuple[float, ...]
    translation: Tuple[float, float, float]

    @property
    def normal_vector(self) -> np.ndarray:
        return np.array(self.normal, np.float64)

    @property
    def height_m(self) -> float:
        """Height of the camera's optical centre above the ground."""
        return float(self.distance)

    @property
    def pitch_deg(self) -> float:
        """Angle of the optical axis below the horizontal (positive looking down)."""
        return math.degrees(math.asin(max(-1.0, min(1.0, self.normal[2]))))

    @property
    def roll_deg(self) -> float:
        """Rotation about the optical axis (0 for a level camera; positive = the camera's right side up,
        so that the ground's down direction leans towards the image's right)."""
        return math.degrees(math.atan2(self.normal[0], self.normal[1]))

    @property
    def R_ground_from_camera(self) -> np.ndarray:
        return np.array(self.rotation, np.float64).reshape(3, 3)

    @property
    def t(self) -> np.ndarray:
        return np.array(self.translation, np.float64)

    def horizon_row(self, intrinsics: Intrinsics) -> float:
        """The raw image row of the horizon at the principal point's column (distortion included);
        negative when the horizon is above the image. The ground is seen below it."""
        n = self.normal
        if abs(n[1]) < 1e-9:
            return -math.inf if n[2] > 0 else math.inf
        y = -n[2] / n[1]
        if abs(y) > 2.0:  # far outside any ordinary field of view: the pinhole row (distortion folds back)
            return float(intrinsics.cy + intrinsics.fy * y)
        return project_ray(intrinsics, (0.0, y, 1.0))[1]


def _plane(R_ground_from_camera: np.ndarray, t: np.ndarray) -> GroundPlane:
    normal = -R_ground_from_camera[2, :]  # the ground's down direction in the camera frame
    normal = normal / np.linalg.norm(normal)
    return GroundPlane(_tuple(normal), float(t[2]), _tuple(R_ground_from_camera), _tuple(t))


def plane_from_height_pitch(height_m: float, pitch_deg: float, roll_deg: float = 0.0) -> GroundPlane:
    """The ground under a camera ``height_m`` above it, its optical axis ``pitch_deg`` below the
    horizontal (positive looking down) and rolled ``roll_deg`` about the optical axis. The ground
    frame's origin is the point under the camera, x along the optical axis' horizontal direction."""
    if not (math.isfinite(height_m) and height_m > 0):
        raise CalibrationError("ground plane: camera height %r m; it must be > 0" % (height_m,))
    if not (math.isfinite(pitch_deg) and -90.0 < pitch_deg < 90.0 and math.isfinite(roll_deg)
            and -90.0 < roll_deg < 90.0):
        raise CalibrationError("ground plane: pitch %r / roll %r degrees; both must be within (-90, 90)"
                               % (pitch_deg, roll_deg))
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    pitch = np.array([[math.cos(p), 0.0, math.sin(p)], [0.0, 1.0, 0.0], [-math.sin(p), 0.0, math.cos(p)]])
    roll = np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
    return _plane(pitch @ LEVEL @ roll, np.array([0.0, 0.0, float(height_m)]))


def plane_from_normal(normal, distance: float) -> GroundPlane:
    """The ground plane n . X = ``distance`` given in the camera's optical frame (e.g. fitted to RGB-D
    points of a floor), with the ground frame of :func:`plane_from_height_pitch` (origin under the
    camera, x along the optical axis' horizontal direction)."""
    n = np.asarray(normal, np.float64).reshape(3)
    norm = float(np.linalg.norm(n))
    if not (np.all(np.isfinite(n)) and norm > 0 and math.isfinite(distance) and distance != 0):
        raise CalibrationError("ground plane: normal %s, distance %r: not a plane" % (n.tolist(), distance))
    n, d = (n / norm, float(distance)) if distance > 0 else (-n / norm, -float(distance))
    return plane_from_height_pitch(d, math.degrees(math.asin(max(-1.0, min(1.0, n[2])))),
                                   math.degrees(math.atan2(n[0], n[1])))


def homography_from_plane(plane: GroundPlane, intrinsics: Intrinsics) -> np.ndarray:
    """The 3x3 homography from rectified pixels of ``intrinsics`` (P, R of camera_info) to the ground
    (x, y in metres), normalised to H[2, 2] = 1: the Duckietown (dt-core daffy) extrinsic convention."""
    R = plane.R_ground_from_camera
    R_cg, t_cg = R.T, -R.T @ plane.t
    M = intrinsics.K_rectified @ intrinsics.R_matrix @ np.stack([R_cg[:, 0], R_cg[:, 1], t_cg], axis=1)
    H = np.linalg.inv(M)
    return H / H[2, 2]


def plane_from_homography(H: np.ndarray, intrinsics: Intrinsics, origin: str = "homography") -> GroundPlane:
    """The :class:`GroundPlane` of a homography from rectified pixels of ``intrinsics`` to the ground
    (Duckietown's convention); CalibrationError naming ``origin`` when it is singular, does not fit
    the intrinsics, or puts the ground behind or above the camera."""
    H = np.asarray(H, np.float64).reshape(3, 3)
    try:
        A = intrinsics.R_matrix.T @ np.linalg.inv(intrinsics.K_rectified) @ np.linalg.inv(H)
    except np.linalg.LinAlgError:
        raise CalibrationError("%s: the homography is singular" % origin) from None
    K_r = intrinsics.K_rectified
    bottom = np.array([K_r[0, 2], (intrinsics.height - 1) * 1.0, 1.0])  # bottom row, principal column
    w0 = float((H @ bottom)[2])
    n1, n2 = np.linalg.norm(A[:, 0]), np.linalg.norm(A[:, 1])
    if abs(w0) < 1e-12 or n1 < 1e-12 or n2 < 1e-12:
        raise CalibrationError("%s: the homography maps the bottom of the image to infinity: the ground "
                               "plane is behind the camera" % origin)
    ratio, cosine = max(n1, n2) / min(n1, n2), abs(A[:, 0] @ A[:, 1]) / (n1 * n2)
    if ratio > MAX_COLUMN_RATIO or cosine > MAX_COLUMN_COSINE:
        raise CalibrationError("%s: the homography does not fit the camera's intrinsics (%dx%d, fx %.1f): "
                               "column ratio %.2f, cosine %.2f; is it this camera's calibration, for "
                               "rectified pixels?" % (origin, intrinsics.width, intrinsics.height,
                                                      intrinsics.fx, ratio, cosine))
    M = A / (math.copysign(1.0, w0) * 0.5 * (n1 + n2))
    r1, r2, t_cg = M[:, 0], M[:, 1], M[:, 2]
    U, _s, Vt = np.linalg.svd(np.stack([r1, r2, np.cross(r1, r2)], axis=1))
    R_cg = U @ Vt  # the nearest rotation (det +1: the third column is r1 x r2)
    t = -R_cg.T @ t_cg
    if not t[2] > 0:
        raise CalibrationError("%s: the homography puts the camera %.3f m below the ground plane (the "
                               "ground seen above the horizon, or behind the camera)" % (origin, -t[2]))
    R, t = _refine_pose(H, R_cg, t_cg, intrinsics, w0)
    if not t[2] > 0:
        raise CalibrationError("%s: the homography puts the camera below the ground plane" % origin)
    return _plane(R, t)


def _refine_pose(H: np.ndarray, R_cg: np.ndarray, t_cg: np.ndarray, intrinsics: Intrinsics, w0: float):
    """(R_ground_from_camera, t): the rigid camera pose that best reproduces the homography over the
    lower half of the rectified image (cv2.solvePnP on the ground points H gives those pixels, started
    from the decomposition; pixels whose ground point is behind the camera or near the horizon are
    left out). A measured homography is not exactly rigid; the decomposition alone leaves 1-2 %
    between its ground points and the homography's own."""
    v, u = np.mgrid[intrinsics.height // 2:intrinsics.height:16, 0:intrinsics.width:16]
    pixels = np.stack([u.reshape(-1), v.reshape(-1), np.ones(u.size)], axis=0).astype(np.float64)
    g = H @ pixels
    pixels, g = pixels[:, g[2] * w0 > 0], g[:, g[2] * w0 > 0]
    ground = np.vstack([g[:2] / g[2], np.zeros((1, g.shape[1]))]).T
    reach = np.hypot(ground[:, 0], ground[:, 1])
    near = reach < 10.0 * np.median(reach) if reach.size else reach > 0
    pixels, ground = pixels[:, near], ground[near]
    if ground.shape[0] < 6:
        return R_cg.T, -R_cg.T @ t_cg
    R_rect = intrinsics.R_matrix
    rvec, _ = cv2.Rodrigues(R_rect @ R_cg)
    ok, rvec, tvec = cv2.solvePnP(ground, pixels[:2].T.copy(), intrinsics.K_rectified, None, rvec,
                                  (R_rect @ t_cg).reshape(3, 1), useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if ok:
        R_cg, t_cg = R_rect.T @ cv2.Rodrigues(rvec)[0], R_rect.T @ tvec.reshape(3)
    return R_cg.T, -R_cg.T @ t_cg
