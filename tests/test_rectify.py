"""The rectified metric depth is what depth_image_proc expects (issue 22, item 1).

depth_image_proc's point_cloud_xyz (depth_image_proc/src/nodelets/point_cloud_xyz.cpp, convert() in
depth_conversions.h) projects pixel (u, v) of its depth input with image_geometry's PinholeCameraModel,
whose cx(), cy(), fx(), fy() are P's: x = (u - P[0,2]) z / P[0,0], y = (v - P[1,2]) z / P[1,1]. Debian
ships that nodelet (libdepth-image-proc0d) without its plugin description, so nodelet cannot load it
here: the projection is written out below. A scene (the road and a box on it) is ray-cast through a
real DB21 camera, once along the raw pixels' rays (what the node's metric depth holds) and once along
the rectified pixels' rays (the truth depth_image_proc should see)."""
import os

import numpy as np
import pytest

from depth_estimation.geometry.calibration import ground_plane, read_extrinsics, read_intrinsics
from depth_estimation.geometry.camera import pixel_rays
from depth_estimation.geometry.rectify import DepthRectifier

from conftest import ROOT

ROBOT = os.path.join(ROOT, "assets", "calibrations", "csc22917")
BOX = ((0.5, 0.6), (-0.15, 0.15), (0.0, 0.1))  # x, y, z ranges in the robot's ground frame (m)


@pytest.fixture(scope="module")
def camera():
    intrinsics = read_intrinsics(os.path.join(ROBOT, "intrinsic.yaml"))
    return intrinsics, ground_plane(read_extrinsics(os.path.join(ROBOT, "extrinsic.yaml")), intrinsics)


def ray_cast(plane, rays):
    """z-depth along camera-frame rays (..., 3) with z = 1 of the ground and the box; NaN for the sky."""
    d = rays @ plane.R_ground_from_camera.T
    c = plane.t
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(d[..., 2] < 0, -c[2] / d[..., 2], np.nan)
        near, far = np.full(rays.shape[:-1], -np.inf), np.full(rays.shape[:-1], np.inf)
        for axis, (lo, hi) in enumerate(BOX):
            a, b = (lo - c[axis]) / d[..., axis], (hi - c[axis]) / d[..., axis]
            near, far = np.maximum(near, np.minimum(a, b)), np.minimum(far, np.maximum(a, b))
        hit = (near <= far) & (near > 0)
        depth = np.where(hit, np.fmin(depth, near), depth)
    return np.where(depth < 5.0, depth, np.nan).astype(np.float32)


def point_cloud_xyz(depth, P):
    """depth_image_proc's projection of a depth image with a camera_info's P."""
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float64)
    return np.stack([(u - P[0, 2]) * depth / P[0, 0], (v - P[1, 2]) * depth / P[1, 1], depth], axis=-1)


def test_the_rectified_pair_gives_depth_image_proc_the_scene_and_the_raw_pair_does_not(camera):
    intrinsics, plane = camera
    xn, yn = pixel_rays(intrinsics, 480, 640)
    raw_depth = ray_cast(plane, np.stack([xn, yn, np.ones_like(xn)], axis=-1).astype(np.float64))
    rectifier = DepthRectifier(intrinsics, 480, 640)
    info = rectifier.camera
    assert (info.width, info.height, info.D) == (640, 480, (0.0,) * 5)
    P = np.reshape(info.P, (3, 4))
    assert np.allclose(np.reshape(info.K, (3, 3)), P[:, :3]) and np.allclose(P, intrinsics.P_matrix)
    rect_depth = rectifier(raw_depth)
    v, u = np.mgrid[0:480, 0:640].astype(np.float64)
    rect_rays = np.stack([(u - P[0, 2]) / P[0, 0], (v - P[1, 2]) / P[1, 1], np.ones(u.shape)], axis=-1)
    truth = point_cloud_xyz(ray_cast(plane, rect_rays), P)  # the scene along the rectified pixels' rays
    cloud = point_cloud_xyz(rect_depth, P)
    both = np.isfinite(cloud[..., 2]) & np.isfinite(truth[..., 2])
    assert both.mean() > 0.3
    error = np.linalg.norm(cloud - truth, axis=-1)[both]
    assert np.median(error) < 0.003 and np.percentile(error, 95) < 0.02  # nearest pixel: edges only
    # the raw depth with the raw camera_info, as the README promised: the cloud is off by centimetres
    raw_cloud = point_cloud_xyz(raw_depth, intrinsics.P_matrix)
    near = both & np.isfinite(raw_cloud[..., 2]) & (truth[..., 2] < 1.5)
    raw_error = np.linalg.norm(raw_cloud - truth, axis=-1)[near] / truth[..., 2][near]
    assert np.median(raw_error) > 0.05, np.median(raw_error)


def test_nan_stays_unknown_and_a_rotated_rectification_moves_z(camera):
    intrinsics, _ = camera
    depth = np.full((480, 640), 2.0, np.float32)
    depth[:, :320] = np.nan
    out = DepthRectifier(intrinsics, 480, 640)(depth)
    assert np.isnan(out[:, :200]).all() and np.nanmax(np.abs(out - 2.0)) == 0.0
    from dataclasses import replace

    angle = np.radians(5.0)  # a stereo rectification turning the camera 5 degrees about y
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    turned = DepthRectifier(replace(intrinsics, R=tuple(R.ravel()), D=()), 480, 640)
    plane_z = turned(np.full((480, 640), 1.0, np.float32))  # a wall at z = 1 in the raw frame
    P = turned.intrinsics.P_matrix
    v, u = np.mgrid[0:480, 0:640].astype(np.float64)
    ray = np.stack([(u - P[0, 2]) / P[0, 0], (v - P[1, 2]) / P[1, 1], np.ones(u.shape)], axis=-1)
    expected = 1.0 / (ray @ R)[..., 2]  # z' where the rectified ray meets the raw frame's z = 1
    ok = np.isfinite(plane_z)
    assert ok.mean() > 0.5 and np.allclose(plane_z[ok], expected[ok], rtol=1e-5)
    with pytest.raises(ValueError, match="640x480"):
        turned(np.ones((240, 320), np.float32))
