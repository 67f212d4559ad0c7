"""The node's metric outputs (framepath.metric) on a real DB21 calibration: metres, scan, obstacle
distance and points from relative disparity; fall-backs and refusals as the node sees them."""
import math
import os

import numpy as np
import pytest
import yaml

from depth_estimation.framepath.metric import MetricOptions, MetricOutputs, check_calibration
from depth_estimation.framepath.params import check_params
from depth_estimation.geometry.calibration import ground_plane, read_extrinsics
from depth_estimation.geometry.camera import read_intrinsics
from depth_estimation.geometry.files import CalibrationError
from depth_estimation.geometry.ground import ground_depth_map
from depth_estimation.io.paths import PACKAGE_DIR, REPO_DIR

CONFIG = os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")
ROBOT = os.path.join(REPO_DIR, "assets", "calibrations", "csc22917")


def node_params(**changes):
    with open(CONFIG) as f:
        raw = yaml.safe_load(f)
    raw.update(metric=True, extrinsics_file=os.path.join(ROBOT, "extrinsic.yaml"), metric_time_constant=0.0)
    raw.update(changes)
    return check_params(raw)


def params(**changes):
    """The options the node builds from its parameters (default.yaml + ``changes``)."""
    return MetricOptions.from_params(node_params(**changes))


@pytest.fixture(scope="module")
def camera():
    """The robot's camera_info (as its intrinsic file holds it) and the true ground depth of its frames."""
    with open(os.path.join(ROBOT, "intrinsic.yaml")) as f:
        info = yaml.safe_load(f)
    intrinsics = read_intrinsics(os.path.join(ROBOT, "intrinsic.yaml"))
    plane = ground_plane(read_extrinsics(os.path.join(ROBOT, "extrinsic.yaml")), intrinsics)
    return info, plane, intrinsics, np.array(ground_depth_map(plane, intrinsics, 480, 640))


def scene(ground, plane=None, intrinsics=None, box_x=None, box=(0.1, 0.1)):
    """z-depth of the scene: the ground, the sky far away, and optionally a box (height, width in
    metres) standing on the ground with its front face ``box_x`` metres ahead of the robot's origin."""
    depth = np.where(np.isfinite(ground), ground, 50.0).astype(np.float32)
    if box_x is not None:
        from depth_estimation.geometry.camera import pixel_rays

        xn, yn = pixel_rays(intrinsics, *ground.shape)
        R, t = plane.R_ground_from_camera, plane.t
        rays = [R[i, 0] * xn + R[i, 1] * yn + R[i, 2] for i in range(3)]  # ground-frame directions, z = 1
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (box_x - t[0]) / rays[0]  # the z-depth where the ray meets the front face
        hit_y, hit_z = t[1] + s * rays[1], t[2] + s * rays[2]
        on_face = (s > 0) & (np.abs(hit_y) <= box[1] / 2) & (hit_z >= 0) & (hit_z <= box[0]) & (s < depth)
        depth[on_face] = s[on_face]
    return depth


def test_off_costs_nothing_and_on_needs_a_usable_calibration(tmp_path):
    assert check_calibration(node_params(metric=False), "csc22917") is None
    broken = tmp_path / "broken.yaml"
    broken.write_text("<<<<<<< HEAD\nhomography: [1, 0, 0, 0, 1, 0, 0, 0, 1]\n=======\n>>>>>>> theirs\n")
    with pytest.raises(CalibrationError, match=str(broken)):
        MetricOutputs(params(extrinsics_file=str(broken)), "csc22917")
    with pytest.raises(CalibrationError, match="missing.yaml: no such file"):  # named: a typo is no fallback
        MetricOutputs(params(extrinsics_file=str(tmp_path / "missing.yaml")), "nobody")
    outputs = MetricOutputs(params(extrinsics_file=""), "nobody")  # the robot's own path: falls back
    assert "camera_extrinsic/nobody.yaml" in outputs.warning and outputs.source.endswith("default.yaml")
    values, warning = outputs.report(0.0)
    assert warning == outputs.warning and values["metric_calibration"].endswith("default.yaml")


def test_relative_disparity_becomes_metres_with_scan_and_obstacle_distance(camera):
    info, plane, intrinsics, ground = camera
    truth = scene(ground, plane, intrinsics, box_x=0.5)
    disparity = (3.0 / truth + 0.25).astype(np.float32)  # the network's output: unknown scale and shift
    outputs = MetricOutputs(params(), "csc22917")
    out = outputs.process(disparity, 10.0, info)
    assert out.frame.state == "OK"
    near = np.isfinite(out.frame.depth_m) & (truth < 3.0)
    assert np.median(np.abs(out.frame.depth_m[near] - truth[near]) / truth[near]) < 0.02
    assert math.isnan(out.frame.depth_m[0, 320])  # the sky, beyond metric_max_range: unknown
    assert out.distance == pytest.approx(0.5, abs=0.03)  # the box's front face, 0.5 m ahead
    ahead = out.scan.ranges[len(out.scan.ranges) // 2]  # bearing 0: straight ahead
    assert ahead == pytest.approx(0.5, abs=0.03) and np.isinf(out.scan.ranges[[0, -1]]).all()
    assert out.points.shape[1] == 3 and out.points.dtype == np.float32
    values, warning = outputs.report(10.0)
    assert values["metric_state"] == "OK" and float(values["metric_inliers"]) > 0.5 and warning is None


def test_no_ground_holds_then_publishes_nothing_metric(camera):
    info, _, _, ground = camera
    outputs = MetricOutputs(params(metric_hold=1.0), "csc22917")
    good = (3.0 / scene(ground) + 0.25).astype(np.float32)
    assert outputs.process(good, 0.0, info).frame.state == "OK"
    wall = np.random.default_rng(0).uniform(0.5, 5.0, good.shape).astype(np.float32)  # no ground in view
    assert outputs.process(wall, 0.5, info).frame.state == "HOLD"
    late = outputs.process(wall, 2.0, info)
    assert late.frame.state == "NONE" and late.frame.depth_m is None and late.scan is None
    assert outputs.report(4.5)[1] and "no confident ground fit" in outputs.report(4.5)[1]


def test_the_outputs_read_options_built_once_not_node_parameter_names(camera):
    options = params(metric_min_inlier_share=0.3, metric_hold=2.5, scan_bins=7, points=False)
    assert isinstance(options.fit.min_inlier_share, float) and options.scan_bins == 7
    outputs = MetricOutputs(options, "csc22917")
    aligner = outputs.aligner_for(camera[0])
    assert aligner.fit_options.min_inlier_share == 0.3 and aligner.hold_s == 2.5
    with pytest.raises(TypeError):
        MetricOutputs(node_params(), "csc22917")  # a parameter dict is not options


def test_no_camera_info_is_a_stated_problem_not_a_guess(camera):
    outputs = MetricOutputs(params(), "csc22917")
    assert outputs.process(np.ones((480, 640), np.float32), 0.0, None) is None
    assert "camera_info" in outputs.report(0.0)[1]


def test_metric_parameters_are_checked():
    from depth_estimation.framepath.params import ParameterError

    with pytest.raises(ParameterError) as caught:
        node_params(obstacle_min_height=0.6, obstacle_max_height=0.5, scan_bins=1)
    assert len(caught.value.problems) == 2


def test_a_calibration_that_puts_the_ground_above_the_robots_camera_stops_the_start(tmp_path):
    import shutil

    from depth_estimation.geometry.calibration import homography_from_plane, plane_from_height_pitch, write_extrinsics

    calibrations = tmp_path / "calibrations"
    (calibrations / "camera_intrinsic").mkdir(parents=True)
    shutil.copy(os.path.join(ROBOT, "intrinsic.yaml"), str(calibrations / "camera_intrinsic" / "csc22917.yaml"))
    intrinsics = read_intrinsics(os.path.join(ROBOT, "intrinsic.yaml"))
    up = write_extrinsics(str(tmp_path / "up.yaml"), homography_from_plane(plane_from_height_pitch(0.1, -60.0),
                                                                          intrinsics))
    with pytest.raises(CalibrationError, match=str(tmp_path / "up.yaml")):
        MetricOutputs(params(extrinsics_file=up), "csc22917", calibrations=str(calibrations))
    # without the robot's own intrinsics the start cannot tell; the first camera_info does, and then
    # nothing metric is published and the problem is said once more per warning period
    said = []
    outputs = MetricOutputs(params(extrinsics_file=up), "csc22917", warn=lambda kind, text: said.append(text),
                            calibrations=str(tmp_path / "none"))
    with open(os.path.join(ROBOT, "intrinsic.yaml")) as f:
        info = yaml.safe_load(f)
    assert outputs.process(np.ones((480, 640), np.float32), 0.0, info) is None
    assert "up.yaml" in said[0] and "nothing metric" in said[0] and "up.yaml" in outputs.report(0.0)[1]


def _robot_calibrations(tmp_path):
    import shutil

    calibrations = tmp_path / "calibrations"
    (calibrations / "camera_intrinsic").mkdir(parents=True)
    shutil.copy(os.path.join(ROBOT, "intrinsic.yaml"), str(calibrations / "camera_intrinsic" / "csc22917.yaml"))
    return str(calibrations)


def _homography_file(tmp_path, name, H):
    from depth_estimation.geometry.calibration import write_extrinsics

    return write_extrinsics(str(tmp_path / name), H)


@pytest.mark.parametrize("change, words", [
    (np.diag([-1.0, -1.0, 1.0]), "looks backwards"),  # the fleet file turned 180 degrees
    (None, "looks up"),  # flipped upside down (csc22913: pitch -30 deg)
])
def test_a_homography_turned_or_flipped_stops_the_start_and_the_camera_info_path(tmp_path, change, words):
    robot = "csc22917" if change is not None else "csc22913"
    folder = os.path.join(REPO_DIR, "assets", "calibrations", robot)
    H = read_extrinsics(os.path.join(folder, "extrinsic.yaml")).H
    H = change @ H if change is not None else H @ np.array([[1.0, 0, 0], [0, -1, 479], [0, 0, 1]])
    bad = _homography_file(tmp_path, "bad.yaml", H)
    import shutil

    calibrations = tmp_path / "calibrations"
    (calibrations / "camera_intrinsic").mkdir(parents=True)
    shutil.copy(os.path.join(folder, "intrinsic.yaml"), str(calibrations / "camera_intrinsic" / "r.yaml"))
    with pytest.raises(CalibrationError, match=words):
        MetricOutputs(params(extrinsics_file=bad), "r", calibrations=str(calibrations))
    said = []
    outputs = MetricOutputs(params(extrinsics_file=bad), "r", warn=lambda kind, text: said.append(text),
                            calibrations=str(tmp_path / "none"))
    with open(os.path.join(folder, "intrinsic.yaml")) as f:
        info = yaml.safe_load(f)
    for stamp in range(5):
        assert outputs.process(np.ones((480, 640), np.float32), float(stamp), info) is None
    assert len(said) == 1 and words in said[0] and "nothing metric" in said[0]
    assert words in outputs.report(0.0)[1]


def test_an_unlikely_pose_is_a_warning_with_its_values_in_diagnostics(tmp_path, camera):
    from depth_estimation.geometry.calibration import homography_from_plane, plane_from_height_pitch

    info, _plane, intrinsics, _ground = camera
    steep = _homography_file(tmp_path, "steep.yaml", homography_from_plane(plane_from_height_pitch(0.12, 46.8),
                                                                           intrinsics))
    said = []
    outputs = MetricOutputs(params(extrinsics_file=steep), "csc22917", warn=lambda kind, text: said.append(text),
                            calibrations=_robot_calibrations(tmp_path))
    assert "pitch 46.8 deg" in outputs.warning and "2-35 deg down" in outputs.warning
    assert len(said) == 1 and "unlikely calibration" in said[0]
    values, warning = outputs.report(0.0)
    assert warning == outputs.warning
    assert values["metric_camera_pitch_deg"] == "46.8" and values["metric_camera_height_m"] == "0.120"
    good = MetricOutputs(params(), "csc22917", calibrations=_robot_calibrations(tmp_path / "good"))
    assert good.warning is None and good.report(0.0)[0]["metric_camera_pitch_deg"] == "10.1"


@pytest.mark.parametrize("change, words", [
    (dict(K=[11454.0, 0, 328.4, 0, 11454.0, 174.0, 0, 0, 1]), "field of view of 3.2 deg"),
    (dict(D=[-5.4, 44.3, 0.0, 0.0, 0.0]), "rays in order"),
    (dict(D=[-0.25, 0.04, 0.0]), "plumb_bob' with 3 coefficients"),
    (dict(D=[-0.25, 0.04, 0.0, 0.0, 0.0, 0.0]), "with 6 coefficients"),
    (dict(D=[0.0] * 999 + [0.1]), "with 1000 coefficients"),
])
def test_camera_intrinsics_that_cannot_be_this_camera_are_one_calibration_problem(camera, change, words):
    """fx = 11454 and D = [-5.4, 44.3] (fleet files that passed), malformed plumb_bob distortion (a raw
    cv2.error per frame before): refused once, with the cause, and nothing metric is published."""
    import cv2

    info, *_ = camera
    bad = dict(info, distortion_model="plumb_bob")
    for key, value in change.items():
        bad["camera_matrix" if key == "K" else "distortion_coefficients"] = {"data": value}
    said = []
    outputs = MetricOutputs(params(), "csc22917", warn=lambda kind, text: said.append(text))
    disparity = (3.0 / np.full((480, 640), 2.0) + 0.25).astype(np.float32)
    for stamp in range(4):
        try:
            assert outputs.process(disparity, float(stamp), bad) is None
        except cv2.error as exc:  # what main did
            pytest.fail("raw OpenCV error: %s" % exc)
    assert len(said) == 1 and words in said[0] and "nothing metric" in said[0], said
    assert words in outputs.report(0.0)[1]
