"""Depth of the raw (distorted) frame -> the rectified depth image that ROS' depth tools expect.

``depth_image_proc`` (``point_cloud_xyz``, ``register``...) and ``depthimage_to_laserscan`` treat a
depth image as rectified and project its pixel (u, v) at depth z with the camera_info's projection
P, as image_geometry's ``PinholeCameraModel`` does: x = (u - P[0,2]) z / P[0,0], y = (v - P[1,2]) z /
P[1,1]. The node's metric depth is computed on the raw frame, whose pixels are not on those rays (on a
DB21's wide lens, 0.15 m off at 1 m in the median). :class:`DepthRectifier` resamples it onto the
rectified image (``cv2.initUndistortRectifyMap`` with K, D, R, P: for every rectified pixel the raw
pixel that sees the same ray; nearest neighbour, so that no depth is invented between an obstacle and
the ground behind it; z moved to the rectified frame when R is not the identity) and gives the
camera_info of that image, as ``image_proc`` describes a rectified camera: D = 0, K = P[:3, :3],
R = identity, P unchanged.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import cv2
import numpy as np

from depth_estimation.geometry.camera import FISHEYE_MODELS, Intrinsics


class RectifiedCamera(NamedTuple):
    """A rectified image's camera_info fields (row-major tuples, as sensor_msgs/CameraInfo holds them)."""
    width: int
    height: int
    distortion_model: str
    D: Tuple[float, ...]
    K: Tuple[float, ...]
    R: Tuple[float, ...]
    P: Tuple[float, ...]


class DepthRectifier:
    """Raw-frame depth (HxW z in metres, NaN = unknown) of one camera at one frame size -> rectified."""

    def __init__(self, intrinsics: Intrinsics, height: int, width: int):
        cam = intrinsics.for_frame(int(height), int(width))
        self.intrinsics, self.shape = cam, (int(height), int(width))
        P, R = cam.P_matrix, cam.R_matrix
        K, D, size = cam.K, np.asarray(cam.D, np.float64), (int(width), int(height))
        if cam.model in FISHEYE_MODELS:
            self._maps = cv2.fisheye.initUndistortRectifyMap(K, D[:4], R, P[:, :3], size, cv2.CV_32FC1)
        else:
            self._maps = cv2.initUndistortRectifyMap(K, D if cam.distorted else None, R, P[:, :3], size,
                                                     cv2.CV_32FC1)
        self._z_scale = None  # z_rect / z_raw for a rotated rectification (stereo); None for R = I
        if not np.allclose(R, np.eye(3)):
            u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
            rect_ray = np.linalg.solve(P[:, :3], np.stack([u.ravel(), v.ravel(), np.ones(u.size)]))
            raw_z = (R.T @ rect_ray)[2]  # a rectified ray with z' = 1 has this z in the raw frame
            self._z_scale = (1.0 / raw_z).reshape(height, width).astype(np.float32)
        self.camera = RectifiedCamera(size[0], size[1], "plumb_bob", (0.0,) * 5,
                                      tuple(float(v) for v in P[:, :3].ravel()),
                                      tuple(float(v) for v in np.eye(3).ravel()),
                                      tuple(float(v) for v in P.ravel()))

    def __call__(self, depth_m: np.ndarray) -> np.ndarray:
        """float32 HxW rectified depth (NaN where the rectified pixel sees no raw pixel or no depth)."""
        depth_m = np.asarray(depth_m, np.float32)
        if depth_m.shape != self.shape:
            raise ValueError("DepthRectifier for %dx%d frames got depth of shape %s"
                             % (self.shape[1], self.shape[0], depth_m.shape))
        out = cv2.remap(depth_m, self._maps[0], self._maps[1], cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
        return out if self._z_scale is None else out * self._z_scale
