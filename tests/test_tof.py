"""The front time-of-flight cross-check (issue 20.2): the sensor model on synthetic scenes, the check's
states, and on a simulated bag (depth-sim2bag's ToF readings against the metric depth of the node's
library path): agreement reported per frame with the right calibration, a camera height x1.5 caught
within 2 s of simulated time."""
import math
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import yaml

from depth_estimation.evaluation import tof_eval
from depth_estimation.evaluation.sim_render import SimCamera
from depth_estimation.framepath.params import ParameterError, check_params
from depth_estimation.framepath.tof_check import STEP, TofCheck
from depth_estimation.geometry import tof
from depth_estimation.geometry.camera import FrameRays
from depth_estimation.geometry.ground import ground_depth_map
from depth_estimation.io.paths import PACKAGE_DIR

CAMERA = SimCamera(width=320, height=240)
DEFAULTS = os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")


def _scene(wall_m=None, camera=CAMERA, pose=tof.TofPose()):
    return _scene_of(camera.intrinsics(), camera.plane(), wall_m, pose)


def _scene_of(intr, plane, wall_m=None, pose=tof.TofPose()):
    """Exact depth of the road and, with ``wall_m``, a wall facing the robot ``wall_m`` ahead of the
    sensor (perpendicular to its axis); with its rays and plane."""
    xn, yn = FrameRays(intr)(intr.height, intr.width)
    depth = ground_depth_map(plane, intr, intr.height, intr.width)
    depth = np.where(np.isfinite(depth) & (depth > 0) & (depth < 10.0), depth, np.inf)
    if wall_m is not None:
        origin, axis = pose.in_camera(plane)
        facing = xn * axis[0] + yn * axis[1] + axis[2]
        with np.errstate(divide="ignore"):
            wall = np.where(facing > 1e-6, (wall_m + axis @ origin) / facing, np.inf)
        depth = np.minimum(depth, wall)
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32), xn, yn, plane


@pytest.mark.parametrize("wall_m", [0.1, 0.4, 0.8, 1.15])
def test_a_wall_ahead_reads_its_distance(wall_m):
    reading = tof.cone_reading(*_scene(wall_m))
    assert reading.in_range and abs(reading.range_m - wall_m) < 0.02 * wall_m + 0.002, reading


def test_the_bare_road_and_no_depth_read_out_of_range_like_the_driver():
    assert tof.cone_reading(*_scene()).range_m == tof.OUT_OF_RANGE_M
    depth, xn, yn, plane = _scene()
    reading = tof.cone_reading(np.zeros_like(depth), xn, yn, plane)
    assert reading.range_m == tof.OUT_OF_RANGE_M and reading.pixels > 0 and not reading.in_range
    far = tof.cone_reading(*_scene(1.6))  # a wall past the max range: the raw reading, as the driver's
    assert 1.55 < far.range_m < 1.7 and not far.in_range


def test_the_pose_is_below_the_camera_along_the_road_not_the_optical_axis():
    """The DB21M default puts the sensor 3.4 cm below the camera, its axis level with the road, whatever
    the camera's tilt: a wall seen by a steeply tilted camera still reads its distance."""
    origin, axis = tof.TofPose().in_camera(CAMERA.plane())
    up = -CAMERA.plane().normal_vector
    assert abs(origin @ up + 0.0336) < 1e-9 and abs(axis @ up) < 1e-9
    steep = replace(CAMERA, pitch_deg=30.0)
    assert abs(tof.cone_reading(*_scene(0.5, steep)).range_m - 0.5) < 0.01
    tilted = tof.TofPose(pitch_deg=10.0)  # a sensor looking down reads a nearer road than a level one
    assert tof.cone_reading(*_scene(None, CAMERA, tilted)[:4], pose=tilted).in_range


def test_pose_parameter_checks():
    assert tof.TofPose.from_list([0.0, 0.0, -0.03, 0, 0]).up_m == -0.03
    for bad in ([0, 0, 0], [0, 0, 0, 0, "x"], [0, 0, 5.0, 0, 0], [0, 0, 0, 95.0, 0], "0 0 0 0 0"):
        with pytest.raises(ValueError):
            tof.TofPose.from_list(bad)
    with open(DEFAULTS) as f:
        raw = yaml.safe_load(f)
    assert check_params(raw)["tof_pose"] == [-0.0014, 0.0, -0.0336, 0.0, 0.0]
    with pytest.raises(ParameterError, match="tof_pose"):
        check_params(dict(raw, tof_pose=[1, 2]))


def test_the_check_agrees_on_right_metres_and_warns_on_wrong_ones_after_its_time_constant():
    depth, xn, yn, plane = _scene(0.6)
    expected = tof.cone_reading(depth, xn, yn, plane, step=STEP).range_m
    check = TofCheck(tof.TofPose(), time_constant_s=1.0, tolerance=0.2)
    assert check.state == "NO_READINGS" and check.report()[1] is None
    check.reading(0.0, expected)
    assert check.frame(5.0, depth, xn, yn, plane) is None and check.state == "NO_PAIRS"  # too far in time
    caught = None
    for k in range(60):
        t = k / 15.0
        check.reading(t, expected)
        one = check.frame(t, depth if k < 15 else depth * 1.5, xn, yn, plane)
        assert one is not None and abs(one.ratio - (1.0 if k < 15 else 1 / 1.5)) < 0.01
        if k < 15:
            assert check.state == "AGREE"
        elif caught is None and check.state == "DISAGREE":
            caught = t - 1.0
    assert caught is not None and 0.2 < caught < 1.0, caught  # sustained, not one frame
    values, warning = check.report()
    assert values["tof_state"] == "DISAGREE" and abs(float(values["tof_ratio"]) - 1 / 1.5) < 0.05
    assert "time-of-flight disagrees" in warning and int(values["tof_count"]) == 60
    assert abs(float(values["tof_residual_m"]) - 0.5 * expected) < 0.01


def test_out_of_range_readings_are_not_compared():
    depth, xn, yn, plane = _scene(0.6)
    check = TofCheck(tof.TofPose(), 1.0, 0.2)
    check.reading(0.0, tof.OUT_OF_RANGE_M)
    assert check.frame(0.0, depth, xn, yn, plane) is None and check.pairs == 0
    check.reading(0.1, 0.6)
    assert check.frame(0.1, *_scene()) is None  # the metric depth says: nothing in range


# --- on a simulated bag ----------------------------------------------------------------------------

def _simulator_available():
    try:
        import gym_duckietown  # noqa: F401
    except ImportError:
        return False
    return bool(os.environ.get("DISPLAY") or shutil.which("Xvfb"))


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory):
    if not _simulator_available():
        pytest.skip("no simulator (duckietown-gym-daffy) or no display")
    from depth_estimation.evaluation import sim2bag

    tmp = tmp_path_factory.mktemp("tof")
    out, calib = str(tmp / "tof.bag"), str(tmp / "calib")
    assert sim2bag.main(["--out", out, "--maps", "loop_empty", "--frames", "30", "--seed", "2",
                         "--width", "160", "--height", "120", "--hz", "10", "--mode", "random",
                         "--obstacle-density", "3",
                         "--calibration-dir", calib, "--no-progress"]) == 0
    return out, calib, tmp


def _messages(bag):
    from depth_estimation.io.bags import iter_messages

    out = {"tof": [], "depth": [], "info": []}
    for topic, _t, msg in iter_messages(bag):
        key = "tof" if topic == "/simbot/" + tof.TOPIC else topic.rsplit("/", 1)[-1]
        key = {"image_raw": "depth", "camera_info": "info"}.get(key, key)
        if key in out:
            out[key].append(msg)
    return out


def _stamp(msg):
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_the_simulated_tof_follows_the_driver(sim_bag):
    msgs = _messages(sim_bag[0])["tof"]
    stamps = np.array([_stamp(m) for m in msgs])
    assert len(msgs) == 45 and np.allclose(np.diff(stamps), 1 / 15.0, atol=1e-6)  # 3 s at 15 Hz
    assert {m.header.frame_id for m in msgs} == {"simbot/tof/front_center"}
    assert all(m.radiation_type == 1 and abs(m.field_of_view - math.radians(25)) < 1e-6
               and abs(m.min_range - 0.05) < 1e-6 and abs(m.max_range - 1.2) < 1e-6 for m in msgs)
    ranges = [m.range for m in msgs]
    assert any(abs(r - tof.OUT_OF_RANGE_M) < 1e-5 for r in ranges), ranges
    assert sum(0.05 <= r <= 1.2 for r in ranges) >= 10, ranges


def test_the_metric_depth_agrees_with_the_simulated_tof_per_frame(sim_bag):
    bag, calib, _tmp = sim_bag
    result = tof_eval.run(bag, os.path.join(calib, "camera_extrinsic", "simbot.yaml"))
    compared = result["comparisons"]  # per frame: ToF reading and the metric depth's prediction
    assert result["compared"] == len(compared) >= 5 and result["caught"] is None, result
    ratios = np.array([c.ratio for c in compared])
    assert abs(np.median(ratios) - 1.0) < 0.05 and result["state"] == "AGREE", ratios


def test_a_camera_height_x1_5_is_caught_within_2_s(sim_bag):
    from depth_estimation.geometry.calibration import ground_plane, read_extrinsics

    bag, calib, tmp = sim_bag
    right = os.path.join(calib, "camera_extrinsic", "simbot.yaml")
    info = _messages(bag)["info"][0]
    wrong = tof_eval.scaled_height(right, info, 1.5, str(tmp / "x1.5.yaml"))
    camera = replace(CAMERA, width=160, height=120)
    height = ground_plane(read_extrinsics(wrong), camera.intrinsics()).height_m
    assert abs(height - 1.5 * camera.height_m) < 1e-3
    result = tof_eval.run(bag, right, height_scale=1.5)
    ratios = [c.ratio for c in result["comparisons"]]
    assert ratios and abs(np.median(ratios) - 1 / 1.5) < 0.07, ratios
    caught = result["caught"]
    assert caught is not None and caught["after_s"] <= 2.0, caught
    assert "time-of-flight disagrees" in caught["warning"] and result["state"] == "DISAGREE"


def test_the_node_feeds_the_check_and_publishes_each_frames_prediction(monkeypatch):
    """depth_node's wiring: ~tof_topic's messages reach the check, the compared frame's prediction is
    published on ~tof/metric_range in the driver's frame and fields, the diagnostics count it."""
    import importlib.util

    rospy = pytest.importorskip("rospy")
    from sensor_msgs.msg import Range
    from std_msgs.msg import Header

    from conftest import ROOT
    from depth_estimation.framepath.metric import check_calibration
    from depth_estimation.geometry.calibration import ground_plane, read_extrinsics
    from depth_estimation.geometry.camera import read_intrinsics
    from test_node_edges import Publisher, robot_camera_info

    spec = importlib.util.spec_from_file_location("depth_node_tof", os.path.join(
        ROOT, "packages", "depth_estimation", "src", "depth_node.py"))
    node = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node)
    robot = os.path.join(ROOT, "assets", "calibrations", "csc22917")
    with open(DEFAULTS) as f:
        raw = yaml.safe_load(f)
    raw.update(metric=True, extrinsics_file=os.path.join(robot, "extrinsic.yaml"), metric_time_constant=0.0)
    n = node.DepthNode.__new__(node.DepthNode)
    n.params = check_params(raw)
    n.metric, n.ground_frame = check_calibration(n.params, "csc22917"), "csc22917/footprint"
    subscribed = {}
    monkeypatch.setattr(rospy, "Subscriber", lambda topic, _kind, callback=None, **_kw: subscribed.update(
        {topic: callback}))
    monkeypatch.setattr(rospy, "Publisher", lambda *_a, **_kw: Publisher(1))
    monkeypatch.setattr(node, "PlainPublisher", lambda *_a, **_kw: Publisher(1))
    monkeypatch.setattr(node, "vehicle", lambda: "csc22917")
    n._advertise()
    intr = read_intrinsics(os.path.join(robot, "intrinsic.yaml"))
    plane = ground_plane(read_extrinsics(os.path.join(robot, "extrinsic.yaml")), intr)
    depth = _scene_of(intr, plane, 0.5)[0]
    disparity = (3.0 / np.where(depth > 0, depth, 50.0) + 0.25).astype(np.float32)
    header = Header(stamp=rospy.Time(1), frame_id="csc22917/camera_optical_frame")
    n.publish_metric(header, 1.0, robot_camera_info(), disparity)
    assert not n.pub_tof.sent  # no reading yet
    subscribed["front_center_tof_driver_node/range"](Range(header=Header(stamp=rospy.Time(2)), range=0.5))
    header.stamp = rospy.Time(2)
    n.publish_metric(header, 2.0, robot_camera_info(), disparity)
    sent = n.pub_tof.sent[0]
    assert sent.header.frame_id == "csc22917/tof/front_center" and sent.header.stamp == rospy.Time(2)
    assert abs(sent.range - 0.5) < 0.05 and sent.radiation_type == Range.INFRARED
    assert abs(sent.field_of_view - math.radians(25)) < 1e-6
    assert (sent.min_range, sent.max_range) == (0.05, 1.2)
    values, warning = n.metric.report(2.0)
    assert values["tof_count"] == "1" and values["tof_state"] == "AGREE" and warning is None
