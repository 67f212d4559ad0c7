"""The node's own edges (issue 22), its methods run on stand-ins of what they talk to: launch values
against DTROS's robot file, ~switch during the model load, no inference without subscribers, the
rectified metric pair, and a failing parameter poll said instead of hidden.

The DTROS stand-in is dt-ros-commons daffy's ``DTROS.__init__`` robot-file step (commit 10deb6ca, the
one tests/test_dtros.py pins; dtros.py lines 133-144): ``<package>/config/<node_name>/<veh>.yaml`` read
and every key set with ``rospy.set_param(f"{node_name}/{key}", value)`` over what the launch gave."""
import ast
import importlib.util
import os
import shutil
import types

import numpy as np
import pytest
import yaml

rospy = pytest.importorskip("rospy")
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from std_srvs.srv import SetBoolRequest  # noqa: E402

from depth_estimation.framepath.gate import FrameGate  # noqa: E402
from depth_estimation.framepath.health import OK, NodeHealth  # noqa: E402
from depth_estimation.framepath.metric import check_calibration  # noqa: E402
from depth_estimation.framepath.params import check_params  # noqa: E402
from depth_estimation.runtime.timing import StageTimer  # noqa: E402

from conftest import ROOT  # noqa: E402

PKG = os.path.join(ROOT, "packages", "depth_estimation")
NODE = os.path.join(PKG, "src", "depth_node.py")
DEFAULTS = os.path.join(PKG, "config", "depth_node", "default.yaml")
ROBOT = os.path.join(ROOT, "assets", "calibrations", "csc22917")


@pytest.fixture(scope="module")
def node():
    spec = importlib.util.spec_from_file_location("depth_node_edges", NODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ParamServer(dict):
    """rospy's parameter calls and rosgraph.Master.getParam on a dict, for a node named ``/<veh>/depth_node``."""

    def __init__(self, ns):
        super().__init__()
        self.ns = ns

    def set_param(self, name, value):
        self[name if name.startswith("/") else self.ns + name.lstrip("~")] = value

    def master(self, _caller):
        server = self

        class Master:
            def getParam(self, key):  # noqa: N802 - rosgraph's name
                prefix = key.rstrip("/") + "/"
                return {k[len(prefix):]: v for k, v in server.items() if k.startswith(prefix)}
        return Master()


def dtros_robot_file_step(server, package_path, node_name, veh):
    """DTROS.__init__'s robot file step, as in dt-ros-commons daffy (see the module docstring)."""
    robot_param_file = f"{package_path}/config/{node_name}/{veh}.yaml"
    if os.path.isfile(robot_param_file):
        with open(robot_param_file, "r") as stream:
            new_params = yaml.load(stream, Loader=yaml.Loader)
        for key in new_params:
            server[f"/{veh}/{node_name}/{key}"] = new_params[key]  # rospy.set_param(f"{node_name}/{key}")


@pytest.mark.parametrize("base", ["dtros", "plain"])
def test_launch_values_win_over_the_robots_file_on_both_bases(node, tmp_path, monkeypatch, base):
    package = tmp_path / "depth_estimation"
    (package / "config" / "depth_node").mkdir(parents=True)
    shutil.copy(DEFAULTS, str(package / "config" / "depth_node" / "default.yaml"))
    (package / "config" / "depth_node" / "robot1.yaml").write_text("model: da2-base\ninput_size: 308\n")
    server = ParamServer("/robot1/depth_node/")
    with open(DEFAULTS) as f:
        for key, value in yaml.safe_load(f).items():
            server.set_param("~" + key, value)
    server.set_param("~model", "da2-small@hqq4")  # the launch: model:=da2-small@hqq4
    monkeypatch.setattr(rospy, "set_param", server.set_param)
    monkeypatch.setattr(rospy, "loginfo", lambda *a: None)
    monkeypatch.setattr(rospy.names, "get_namespace", lambda: "/robot1/")
    monkeypatch.setattr(node.rosgraph, "Master", server.master)
    monkeypatch.setattr(node, "vehicle", lambda: "robot1")
    monkeypatch.setattr(node, "package_config", lambda: str(package / "config" / "depth_node"))
    monkeypatch.delenv("DEPTH_NODE_CONFIG_DIR", raising=False)
    given = node.launch_values()  # before the base class
    if base == "dtros":
        dtros_robot_file_step(server, str(package), "depth_node", "robot1")
        assert server["/robot1/depth_node/model"] == "da2-base"  # what DTROS leaves
    node.merge_robot_file(given)
    assert server["/robot1/depth_node/model"] == "da2-small@hqq4"  # the launch's, as the README says
    assert server["/robot1/depth_node/input_size"] == 308  # the robot's, where the launch gave nothing


def test_switch_off_during_the_model_load_is_kept(node, monkeypatch):
    """The base's ~switch exists before the model is loaded: a call then must work, and the gate the
    node runs with must be the one it switched off."""
    monkeypatch.setattr(rospy, "loginfo", lambda *a: None)
    loading = node.DepthNode.__new__(node.DepthNode)
    loading._switch, loading.gate, loading.node_name = True, FrameGate(), "/depth_node"  # while loading
    response = node.PlainNode._srv_switch(loading, SetBoolRequest(data=False))
    assert response.success and not loading.switch and not loading.gate.active
    cls = next(n for n in ast.walk(ast.parse(open(NODE).read()))
               if isinstance(n, ast.ClassDef) and n.name == "DepthNode")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    lines = [ast.unparse(s) for s in init.body]
    gates = [i for i, s in enumerate(lines) if "FrameGate()" in s]
    base = next(i for i, s in enumerate(lines) if s.startswith("super().__init__"))
    assert len(gates) == 1 and gates[0] < base  # made once, before the service exists
    assert any("set_paused(not self.switch" in s for s in lines)  # the load ends in the switch's state


class Publisher:
    def __init__(self, connections=0):
        self.connections, self.sent = connections, []

    def get_num_connections(self):
        return self.connections

    def publish(self, msg):
        self.sent.append(msg)


def test_no_subscriber_to_any_output_no_inference_and_diagnostics_say_idle(node, monkeypatch):
    monkeypatch.setattr(rospy, "get_time", lambda: 5.0)
    n = node.DepthNode.__new__(node.DepthNode)
    n.gate, submitted = FrameGate(), []
    n.health = NodeHealth(StageTimer(), {"model": "m", "backend": "torch", "device": "cpu"})
    n.stream = types.SimpleNamespace(submit=lambda frame, seq: submitted.append(seq))
    n.pub_depth, n.pub_info, n.pub_diag = Publisher(), Publisher(), Publisher(connections=3)
    msg = types.SimpleNamespace(header=types.SimpleNamespace(stamp=rospy.Time(5), seq=1), data=b"", format="jpeg")
    n.on_image(msg)
    assert not submitted and n.health.frames_idle == 1  # /diagnostics' own subscriber does not count
    assert n.health.report(5.5)[:2] == (OK, "idle: no subscribers (1 frame(s) not processed)")
    n.pub_info = Publisher(connections=1)
    msg.header.stamp, msg.header.seq = rospy.Time(6), 2
    n.on_image(msg)
    assert submitted == [2]


def robot_camera_info():
    """csc22917's camera_info (its intrinsic file) as the camera sends it."""
    with open(os.path.join(ROBOT, "intrinsic.yaml")) as f:
        cal = yaml.safe_load(f)
    return CameraInfo(width=640, height=480, distortion_model="plumb_bob", K=cal["camera_matrix"]["data"],
                      D=cal["distortion_coefficients"]["data"], R=cal["rectification_matrix"]["data"],
                      P=cal["projection_matrix"]["data"])


def test_the_rectified_metric_pair_is_published_for_its_subscribers(node, monkeypatch):
    with open(DEFAULTS) as f:
        raw = yaml.safe_load(f)
    raw.update(metric=True, extrinsics_file=os.path.join(ROBOT, "extrinsic.yaml"), metric_time_constant=0.0)
    n = node.DepthNode.__new__(node.DepthNode)
    n.params = check_params(raw)
    n.metric, n.ground_frame = check_calibration(n.params, "csc22917"), "csc22917/footprint"
    info = robot_camera_info()
    for name, _topic, _kind in node.METRIC_TOPICS:
        setattr(n, "pub_" + name, Publisher())
    from test_edges import ground_disparity

    header = Header(stamp=rospy.Time(1), frame_id="csc22917/camera_optical_frame")
    n.publish_metric(header, 1.0, info, ground_disparity())
    assert n.pub_metric.sent and not n.pub_rect.sent  # nobody listens to the rectified pair: not made
    n.pub_rect, n.pub_rect_info = Publisher(1), Publisher(1)
    n.publish_metric(header, 1.0, info, ground_disparity())
    image, rect_info = n.pub_rect.sent[0], n.pub_rect_info.sent[0]
    assert (image.encoding, image.height, image.width, image.header.frame_id) == ("32FC1", 480, 640,
                                                                                   header.frame_id)
    assert rect_info.header.stamp == header.stamp and list(rect_info.D) == [0.0] * 5
    assert np.allclose(np.reshape(rect_info.K, (3, 3)), np.reshape(info.P, (3, 4))[:, :3])
    assert list(rect_info.P) == list(info.P)


def test_a_failing_parameter_poll_is_said_not_hidden(node, monkeypatch):
    said = []
    monkeypatch.setattr(rospy, "get_time", lambda: 1.0)
    monkeypatch.setattr(rospy, "logwarn", lambda text, *args: said.append(text % args))

    def broken(name, default=None):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(rospy, "get_param_cached", broken)
    n = node.DepthNode.__new__(node.DepthNode)
    n.warned, n.params, n.bad_runtime = {}, {}, None
    n.reread_params()
    n.reread_params()  # said once (then once per warning period), not on every poll
    assert len(said) == 1 and "run-time parameters" in said[0] and "Connection refused" in said[0]


def test_the_evaluator_reads_predictions_as_depth_eval_does(monkeypatch):
    """evaluator_node decoded a prediction as packed little-endian float32; a padded row (step) or a
    big-endian image was misread. It now uses io.rgbd's decoder, the one depth-eval uses."""
    import threading

    from sensor_msgs.msg import Image

    spec = importlib.util.spec_from_file_location("evaluator_node_edges", os.path.join(PKG, "src", "evaluator_node.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ev = module.Evaluator.__new__(module.Evaluator)
    ev.preds, ev.gts, ev.lock = {}, {}, threading.Lock()
    pred = np.arange(12, dtype=np.float32).reshape(3, 4) / 7.0
    rows = np.zeros((3, 24), np.uint8)  # 4 floats = 16 bytes of data, 8 of padding per row
    rows[:, :16] = pred.astype(">f4").view(np.uint8).reshape(3, 16)
    msg = Image(height=3, width=4, encoding="32FC1", is_bigendian=1, step=24, data=rows.tobytes())
    msg.header.stamp = rospy.Time(2, 5)
    ev.on_prediction(msg)
    assert list(ev.preds) == [2 * 10 ** 9 + 5] and np.array_equal(ev.preds[2 * 10 ** 9 + 5], pred)
    said = []
    monkeypatch.setattr(rospy, "logwarn", lambda text, *args: said.append(text % args))
    msg.encoding = "16UC1"  # not a prediction's encoding: one line, nothing stored
    msg.header.stamp = rospy.Time(3)
    ev.on_prediction(msg)
    assert len(ev.preds) == 1 and "prediction encoding 16UC1; expected 32FC1" in said[0]
