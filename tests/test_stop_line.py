"""~virtual_stop_line (issue 20.1): the obstacle distance as dt-core's lane controller reads it
(framepath.stop_line), published by the node as duckietown_msgs/StopLineReading only in metric states
OK and HOLD; the test-only message (test/test_msgs) has dt-ros-commons daffy's MD5; and a rostest on a
simulated drive up to an obstacle against the simulator's ground truth."""
import importlib.util
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from depth_estimation.framepath.stop_line import StopLine, stop_speed, virtual_stop_line

from conftest import ROOT

PKG = os.path.join(ROOT, "packages", "depth_estimation")
TEST_MSGS = os.path.join(PKG, "test", "test_msgs")
# duckietown_msgs/StopLineReading's MD5 in dt-ros-commons daffy's generated code (the same value in its
# C++, Lisp and JavaScript bindings found in public repositories): the test message must have it
DAFFY_MD5 = "735fe9e9ff1e4d7460bbf69ab2720ae0"


@pytest.mark.parametrize("distance, state, expected", [
    (0.37, "OK", StopLine(True, False, 0.37)),  # a float, not vehicle_filter_node's int() truncation
    (0.2, "HOLD", StopLine(True, True, 0.2)),
    (math.inf, "OK", StopLine(False, False, 0.0)),  # nothing in the corridor within range
    (0.2, "NONE", None),  # a fit the node does not trust: nothing
    (math.nan, "OK", None),
])
def test_the_reading_of_a_distance(distance, state, expected):
    assert virtual_stop_line(distance, state, 0.25) == expected
    assert virtual_stop_line(0.25, "OK", 0.25).at_stop_line is False  # below the offset, not at it


def test_the_lane_controllers_speed_for_a_reading():
    """dt-core daffy lane_controller_node: v_bar without an obstacle, its stop-line slowdown (v_bar at
    0.6 m and beyond, v_bar / 2 at 0.15 m and closer) times 0.25 while one is detected, 0 at the line."""
    v = lambda reading: stop_speed(reading, 0.19, 0.6, 0.15, 0.25)  # noqa: E731
    assert v(None) == v(StopLine(False, False, 0.0)) == 0.19
    assert v(StopLine(True, True, 0.2)) == 0.0
    assert v(StopLine(True, False, 1.5)) == pytest.approx(0.19 * 0.25)
    assert v(StopLine(True, False, 0.15)) == v(StopLine(True, False, 0.1)) == pytest.approx(0.095 * 0.25)
    assert v(StopLine(True, False, 0.375)) == pytest.approx(0.75 * 0.19 * 0.25)


@pytest.fixture
def test_msgs(monkeypatch):
    pytest.importorskip("genpy")
    monkeypatch.syspath_prepend(TEST_MSGS)
    for name in ("duckietown_msgs", "duckietown_msgs.msg"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from duckietown_msgs.msg import StopLineReading

    yield StopLineReading
    for name in ("duckietown_msgs", "duckietown_msgs.msg"):
        sys.modules.pop(name, None)


def test_the_test_message_is_dt_ros_commons_daffys(test_msgs):
    assert (test_msgs._type, test_msgs._md5sum) == ("duckietown_msgs/StopLineReading", DAFFY_MD5)
    assert test_msgs.__slots__ == ["header", "stop_line_detected", "at_stop_line", "stop_line_point"]
    assert test_msgs._slot_types == ["std_msgs/Header", "bool", "bool", "geometry_msgs/Point"]


def _node(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(PKG, "src", "depth_node.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Publisher:
    """rospy.Publisher's publish: a message, or its fields in order (then made of ``data_class``)."""

    def __init__(self, topic="", data_class=None, queue_size=1):
        self.topic, self.data_class, self.sent = topic, data_class, []

    def get_num_connections(self):
        return 0

    def publish(self, *args):
        self.sent.append(args[0] if len(args) == 1 else self.data_class(*args))


def _metric_node(node, offset):
    from sensor_msgs.msg import CameraInfo

    from depth_estimation.framepath.metric import check_calibration
    from depth_estimation.framepath.params import check_params

    robot = os.path.join(ROOT, "assets", "calibrations", "csc22917")
    with open(os.path.join(PKG, "config", "depth_node", "default.yaml")) as f:
        raw = yaml.safe_load(f)
    raw.update(metric=True, extrinsics_file=os.path.join(robot, "extrinsic.yaml"), metric_time_constant=0.0,
               virtual_stop_line_offset=offset)
    n = node.DepthNode.__new__(node.DepthNode)
    n.params = check_params(raw)
    n.metric, n.ground_frame = check_calibration(n.params, "csc22917"), "csc22917/footprint"
    with open(os.path.join(robot, "intrinsic.yaml")) as f:
        cal = yaml.safe_load(f)
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", K=cal["camera_matrix"]["data"],
                      D=cal["distortion_coefficients"]["data"], R=cal["rectification_matrix"]["data"],
                      P=cal["projection_matrix"]["data"])
    for name, _topic, _kind in node.METRIC_TOPICS:
        setattr(n, "pub_" + name, Publisher())
    return n, info


def test_the_node_publishes_the_reading_only_from_a_trusted_fit(test_msgs):
    """The road of a real robot's calibration: OK, nothing ahead (not detected); a frame whose ground
    cannot be fitted after the hold (state NONE): no reading at all."""
    rospy = pytest.importorskip("rospy")
    from std_msgs.msg import Header
    from test_edges import ground_disparity

    node = _node("depth_node_stop_line")
    n, info = _metric_node(node, 0.3)
    n.pub_stop_line = Publisher("~virtual_stop_line", test_msgs)
    header = Header(stamp=rospy.Time(1), frame_id="csc22917/camera_optical_frame")
    n.publish_metric(header, 1.0, info, ground_disparity())
    (msg,) = n.pub_stop_line.sent
    assert isinstance(msg, test_msgs) and msg.header.frame_id == "csc22917/footprint"
    assert (msg.stop_line_detected, msg.at_stop_line, msg.stop_line_point.x) == (False, False, 0.0)
    flat = np.full_like(ground_disparity(), 0.5)  # no ground to fit: HOLD for metric_hold, then NONE
    n.publish_metric(header, 10.0, info, flat)
    assert len(n.pub_stop_line.sent) == 1 and n.metric.last.state == "NONE"


def _advertised(monkeypatch):
    """(topics advertised, lines logged) of the node's _advertise with metric outputs."""
    rospy = pytest.importorskip("rospy")
    node = _node("depth_node_advertise")
    n, _info = _metric_node(node, 0.25)
    said, made = [], []
    monkeypatch.setattr(rospy, "loginfo", lambda text, *args: said.append(text % args))
    monkeypatch.setattr(rospy, "Publisher",
                        lambda topic, kind, queue_size: made.append((topic, kind)) or Publisher())
    monkeypatch.setattr(rospy, "logwarn", lambda text, *args: None)
    monkeypatch.setattr(node, "PlainPublisher", Publisher)
    monkeypatch.setattr(rospy, "Subscriber", lambda *a, **k: None)
    n.params["tof_topic"] = ""
    n._advertise()
    return dict(made), [line for line in said if "virtual_stop_line" in line]


def test_without_duckietown_msgs_the_topic_is_off_with_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "duckietown_msgs", None)  # import fails: a plain ROS install
    monkeypatch.setitem(sys.modules, "duckietown_msgs.msg", None)
    made, said = _advertised(monkeypatch)
    assert "~obstacle_distance" in made and "~virtual_stop_line" not in made
    assert said == ["depth_node: ~virtual_stop_line is off: duckietown_msgs is not installed"]


def test_with_duckietown_msgs_the_topic_is_advertised(test_msgs, monkeypatch):
    made, said = _advertised(monkeypatch)
    assert made["~virtual_stop_line"] is test_msgs and said == []


# --- the rostest on a simulated drive ----------------------------------------------------------------

SIM_ARGS = ["--maps", "loop_empty", "--frames", "28", "--seed", "2", "--width", "320", "--height", "240",
            "--hz", "10", "--episode-frames", "60", "--obstacle-density", "1", "--no-progress"]


def _oracle_frames(bag, out):
    """The rostest oracle's file: each frame's RGB as the node's estimator receives it (decoded like
    the node's pipeline does), keyed by SHA-1, with the frame's exact depth."""
    import hashlib

    import cv2

    from depth_estimation.framepath import frames
    from depth_estimation.io.bags import iter_messages, rgbd_topics

    image, depth_topic, _info = rgbd_topics("simbot")
    keys, depths = [], []
    for topic, _t, msg in iter_messages(bag):
        if topic == image:
            rgb = cv2.cvtColor(frames.decode(bytes(msg.data), msg.format), cv2.COLOR_BGR2RGB)
            keys.append(hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest())
        elif topic == depth_topic:
            depths.append(np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width))
    assert len(keys) == len(depths) == 28
    np.savez(out, keys=np.array(keys), depths=np.stack(depths))
    return out


def test_rostest_virtual_stop_line_on_a_simulated_drive_up_to_an_obstacle(tmp_path):
    pytest.importorskip("gym_duckietown", reason="duckietown-gym-daffy is not installed (requirements.txt)")
    if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:
        pytest.skip("no X display and no Xvfb (Debian's xvfb)")
    if shutil.which("rostest") is None or not os.environ.get("ROS_PACKAGE_PATH"):
        pytest.fail("ROS environment missing: run through `make test` (or `source env.sh` first)")
    from depth_estimation.evaluation import sim2bag

    bag, calib = str(tmp_path / "approach.bag"), str(tmp_path / "calib")
    assert sim2bag.main(["--out", bag, "--calibration-dir", calib] + SIM_ARGS) == 0
    oracle = _oracle_frames(bag, str(tmp_path / "oracle.npz"))
    env = dict(os.environ, ROS_HOME=str(tmp_path / "ros_home"))
    env.pop("ROS_MASTER_URI", None)
    proc = subprocess.run(["rostest", "depth_estimation", "virtual_stop_line.test", "bag:=" + bag,
                           "oracle:=" + oracle, "frames:=28",
                           "extrinsics_file:=" + os.path.join(calib, "camera_extrinsic", "simbot.yaml")],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=400)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0 and "RESULT: SUCCESS" in proc.stdout, tail
