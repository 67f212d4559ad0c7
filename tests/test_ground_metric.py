"""Metric depth from the ground, frame by frame: a synthetic scene ray-cast through a real DB21 camera
(its distortion and extrinsic calibration) with a box standing on the road. The fit ignores the box,
the aligner's filter follows its time constant, it holds and then gives up when the ground disappears,
and the scan and the obstacle distance find the box where it is."""
import math
import os

import numpy as np
import pytest

from depth_estimation.geometry.calibration import ground_plane, read_extrinsics, read_intrinsics
from depth_estimation.geometry.camera import pixel_rays
from depth_estimation.geometry.ground import (FitOptions, MetricAligner, fit_ground, ground_candidates,
                                              ground_depth_map, sample_grid)
from depth_estimation.geometry.obstacles import laser_scan, obstacle_distance, points_camera

from conftest import ROOT

ROBOT = os.path.join(ROOT, "assets", "calibrations", "csc22917")
BOX = ((0.5, 0.6), (-0.06, 0.06), (0.0, 0.1))  # x, y, z ranges in the robot's ground frame (m)
A, B = 0.2, 0.35  # the "model's" unknown affine map of true disparity


@pytest.fixture(scope="module")
def camera():
    intrinsics = read_intrinsics(os.path.join(ROBOT, "intrinsic.yaml"))
    return intrinsics, ground_plane(read_extrinsics(os.path.join(ROBOT, "extrinsic.yaml")), intrinsics)


def scene_depth(plane, intrinsics, box=BOX):
    """z-depth of the ground and an axis-aligned box on it, ray-cast in the ground frame; inf for the sky."""
    xn, yn = pixel_rays(intrinsics, intrinsics.height, intrinsics.width)
    rays = np.stack([xn, yn, np.ones_like(xn)], axis=-1).astype(np.float64)  # camera frame, z = 1
    d = rays @ plane.R_ground_from_camera.T  # ground-frame direction per unit of camera depth
    c = plane.t
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(d[..., 2] < 0, -c[2] / d[..., 2], np.inf)
        if box is not None:
            near, far = np.full(xn.shape, -np.inf), np.full(xn.shape, np.inf)
            for axis, (lo, hi) in enumerate(box):
                a, b = (lo - c[axis]) / d[..., axis], (hi - c[axis]) / d[..., axis]
                near, far = np.maximum(near, np.minimum(a, b)), np.minimum(far, np.maximum(a, b))
            hit = (near <= far) & (near > 0)
            depth = np.where(hit, np.minimum(depth, near), depth)
    return depth


def prediction(depth, a=A, b=B, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    disparity = 1.0 / depth  # 0 for the sky
    return (a * disparity * (1 + noise * rng.standard_normal(depth.shape)) + b).astype(np.float32)


def test_ground_depth_map_is_the_ray_cast_ground_and_nan_above_the_horizon(camera):
    intrinsics, plane = camera
    ground = ground_depth_map(plane, intrinsics, 480, 640)
    cast = scene_depth(plane, intrinsics, box=None)
    below = np.isfinite(cast)
    assert np.array_equal(np.isfinite(ground), below)
    near = below & (cast < 20.0)  # (float32 rays lose precision at the horizon itself)
    assert np.allclose(ground[near], cast[near], rtol=1e-4)
    horizon = plane.horizon_row(intrinsics)
    column = int(round(intrinsics.cx))
    assert np.isnan(ground[:int(horizon) - 1, column]).all() and np.isfinite(ground[int(horizon) + 2:, column]).all()
    # a half-size stream: the same ground, the intrinsics scaled to the frame
    half = ground_depth_map(plane, intrinsics, 240, 320)
    rows = slice(300, 480, 2)
    assert np.nanmax(np.abs(half[150:240, :] / ground[rows, 1::2] - 1)) < 0.02


def test_fit_ignores_an_obstacle_on_the_ground(camera):
    intrinsics, plane = camera
    depth = scene_depth(plane, intrinsics, box=((0.3, 0.5), (-0.2, 0.2), (0.0, 0.2)))  # a big box, close
    pred = prediction(depth, noise=0.01)
    gd, candidates = ground_candidates(plane, intrinsics, 480, 640)
    box = depth < ground_depth_map(plane, intrinsics, 480, 640) * 0.85  # clearly in front of the road
    on_box = box.reshape(-1)[candidates]
    assert 0.2 < on_box.mean() < 0.6  # the box hides a good part of the road
    fit = fit_ground(pred, gd, candidates)
    assert fit.ok and abs(fit.scale * A - 1) < 0.02 and abs(fit.shift + B / A) < 0.02 * B / A, fit
    assert fit.inliers.any() and not (fit.inliers & box).any()
    naive = np.polyfit(pred.reshape(-1)[candidates], gd.reshape(-1)[candidates], 1)  # plain least squares
    assert abs(naive[0] * A - 1) > 0.1  # would be fooled by the box


def test_candidates_are_a_boolean_mask_or_flat_indices_never_a_guess_from_the_dtype(camera):
    intrinsics, plane = camera
    pred = prediction(scene_depth(plane, intrinsics), noise=0.01)
    gd, index = ground_candidates(plane, intrinsics, 480, 640)
    mask = np.zeros((480, 640), bool)
    mask.reshape(-1)[index] = True
    fits = [fit_ground(pred, gd, c) for c in (mask, index, sample_grid(index, (480, 640)))]
    assert all(f.ok for f in fits) and len({(f.scale, f.shift) for f in fits}) == 1
    for ambiguous in (mask.astype(np.int64), mask.astype(np.uint8), index.reshape(1, -1)):
        with pytest.raises(ValueError, match="boolean 480x640 mask or 1-D flat pixel indices"):
            fit_ground(pred, gd, ambiguous)  # a 0/1 integer mask is not read as pixels 0 and 1
    with pytest.raises(ValueError, match="outside"):
        fit_ground(pred, gd, np.array([480 * 640]))
    with pytest.raises(ValueError, match="frame"):
        fit_ground(pred[:240], gd[:240], sample_grid(index, (480, 640)))


def test_min_inlier_share_is_a_share_and_min_inliers_a_count(camera):
    intrinsics, plane = camera
    pred = prediction(scene_depth(plane, intrinsics), noise=0.01)
    gd, index = ground_candidates(plane, intrinsics, 480, 640)
    fit = fit_ground(pred, gd, index)
    count = int(fit.inliers.sum())
    assert fit.ok and 100 < count < 2000
    assert not fit_ground(pred, gd, index, FitOptions(min_inliers=count + 1)).ok
    assert not fit_ground(pred, gd, index, FitOptions(min_inlier_share=min(1.0, fit.inlier_share + 0.01))).ok
    for bad in (dict(min_inlier_share=5), dict(min_inliers=0.5), dict(max_behind_share=-0.1)):
        with pytest.raises(ValueError):
            FitOptions(**bad)
    from depth_estimation.framepath.params import CHECKS

    assert "metric_min_inlier_share" in CHECKS and "metric_min_inliers" not in CHECKS  # the node says share


def test_aligner_gives_metres_nan_where_unknown_and_the_ground_inliers(camera):
    intrinsics, plane = camera
    depth = scene_depth(plane, intrinsics)
    aligner = MetricAligner(plane, intrinsics, max_range_m=5.0)
    frame = aligner.update(prediction(depth, noise=0.01), 0.0)
    assert frame.state == "OK" and frame.depth_m.dtype == np.float32 and frame.depth_m.shape == (480, 640)
    near = np.isfinite(depth) & (depth < 4.0)
    assert np.nanmedian(np.abs(frame.depth_m[near] / depth[near] - 1)) < 0.01
    assert np.isnan(frame.depth_m[~np.isfinite(depth)]).all()  # the sky: unknown, not far
    assert np.isnan(frame.depth_m[np.isfinite(depth) & (depth > 6.0)]).all()  # beyond max_range_m
    box = np.isfinite(depth) & (depth < ground_depth_map(plane, intrinsics, 480, 640) * 0.85)
    assert frame.inliers[near & ~box].mean() > 0.9 and not frame.inliers[box].any()
    assert frame.inlier_share > 0.8 and frame.ground_rmse < 0.05


def test_hold_then_none_when_the_ground_disappears(camera):
    intrinsics, plane = camera
    road = prediction(scene_depth(plane, intrinsics), noise=0.01)
    wall = np.full(road.shape, A / 0.15 + B, np.float32) + np.random.default_rng(1).normal(0, 0.01, road.shape)
    aligner = MetricAligner(plane, intrinsics, time_constant_s=0.5, hold_s=1.0)
    states = []
    for k in range(91):  # 3 s at 30 Hz: road for 1 s, a wall right in front for 1.5 s, the road again
        stamp = k / 30.0
        frame = aligner.update(wall.astype(np.float32) if 30 < k <= 75 else road, stamp)
        states.append(frame.state)
        if frame.state == "HOLD":
            assert frame.depth_m is not None and abs(frame.scale * A - 1) < 0.02  # the last good estimate
        if frame.state == "NONE":
            assert frame.depth_m is None and frame.inliers is None and math.isnan(frame.scale)
    assert states[:31] == ["OK"] * 31
    assert states[31:61] == ["HOLD"] * 30  # up to hold_s after the last good frame (k = 30, t = 1.0 s)
    assert states[61:76] == ["NONE"] * 15
    assert states[76:] == ["OK"] * 15  # back at once, from the new fit alone
    assert abs(aligner.scale * A - 1) < 0.02


def test_filter_follows_the_time_constant(camera):
    intrinsics, plane = camera
    depth = scene_depth(plane, intrinsics)
    tau, rate = 0.5, 30.0
    aligner = MetricAligner(plane, intrinsics, time_constant_s=tau)
    for k in range(30):
        aligner.update(prediction(depth, a=A), k / rate)
    start = aligner.scale
    target = 1.0 / (2 * A)  # the model's output scale doubles (a brighter scene, another exposure...)
    history = []
    for k in range(30, 30 + 5 * 15 + 1):
        history.append(aligner.update(prediction(depth, a=2 * A), k / rate).scale)
    moved = [(s - start) / (target - start) for s in history]
    # frame k at t = (k - 29) / rate after the change: an exponential with time constant tau
    at_tau = moved[int(tau * rate) - 1]
    assert abs(at_tau - (1 - math.exp(-1))) < 0.03, at_tau
    assert moved[-1] > 0.99 and all(b >= a for a, b in zip(moved, moved[1:]))
    instant = MetricAligner(plane, intrinsics, time_constant_s=0.0)
    instant.update(prediction(depth, a=A), 0.0)
    assert abs(instant.update(prediction(depth, a=2 * A), 1 / rate).scale - target) < 0.02 * target


def test_scan_and_obstacle_distance_find_the_box(camera):
    intrinsics, plane = camera
    frame = MetricAligner(plane, intrinsics).update(prediction(scene_depth(plane, intrinsics), noise=0.005), 0.0)
    distance = obstacle_distance(frame.depth_m, plane, intrinsics, corridor_width_m=0.2, min_height_m=0.02,
                                 max_range_m=2.0)
    assert abs(distance - BOX[0][0]) < 0.02, distance
    assert obstacle_distance(frame.depth_m, plane, intrinsics, corridor_width_m=0.05, min_height_m=0.15) == math.inf
    scan = laser_scan(frame.depth_m, plane, intrinsics, min_height_m=0.02, max_height_m=0.5,
                      angle_min=-0.5, angle_max=0.5, n_bins=51, range_min=0.05, range_max=3.0)
    assert scan.ranges.dtype == np.float32 and scan.ranges.size == 51
    bearings = scan.angle_min + scan.angle_increment * np.arange(51)
    assert abs(scan.angle_max - 0.5) < 1e-9
    # bearings through the box' front face see it at about x / cos(bearing); all others see nothing
    through = np.abs(bearings) < math.atan2(BOX[1][1], BOX[0][0]) - scan.angle_increment
    assert through.sum() >= 5
    assert np.allclose(scan.ranges[through], BOX[0][0] / np.cos(bearings[through]), rtol=0.05)
    clear = np.abs(bearings) > math.atan2(BOX[1][1], BOX[0][0]) + 2 * scan.angle_increment
    assert np.isinf(scan.ranges[clear]).all()


def test_points_lie_on_the_ground_and_are_decimated(camera):
    intrinsics, plane = camera
    depth = ground_depth_map(plane, intrinsics, 480, 640)
    points = points_camera(depth, intrinsics, step=4)
    assert points.dtype == np.float32 and points.shape[1] == 3
    assert points.shape[0] == np.isfinite(depth[::4, ::4]).sum()
    assert np.allclose(points @ plane.normal_vector.astype(np.float32), plane.distance, rtol=1e-3)
