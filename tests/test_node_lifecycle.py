"""The depth node's life on a real ROS master: it fails at start with one line per cause, shuts down
cleanly in the middle of an inference, leaves when the master it registered with restarts, and takes
its robot's own parameter file over the defaults.

Needs the catkin workspace and ROS environment (`make test` sources env.sh)."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT

PKG = os.path.join(ROOT, "packages", "depth_estimation")
NODE = os.path.join(PKG, "src", "depth_node.py")
DEFAULTS = os.path.join(PKG, "config", "depth_node", "default.yaml")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Master:
    """``roscore`` on a free port, the node's defaults loaded, and a way to run the node against it."""

    def __init__(self, tmp_path):
        if not os.environ.get("ROS_PACKAGE_PATH"):
            pytest.fail("ROS environment missing: run through `make test` (or `source env.sh` first)")
        self.port = _free_port()
        self.env = dict(os.environ, ROS_MASTER_URI="http://127.0.0.1:%d" % self.port,
                        ROS_HOME=str(tmp_path / "ros_home"), PYTHONUNBUFFERED="1")
        self.log = tmp_path / "roscore.log"
        self.core = None

    def start(self):
        self.core = subprocess.Popen(["roscore", "-p", str(self.port)], env=self.env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while subprocess.run(["rosparam", "load", DEFAULTS, "/t/depth_node"], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            assert time.time() < deadline and self.core.poll() is None, "roscore did not start"
            time.sleep(0.5)

    def stop(self):
        if self.core is not None and self.core.poll() is None:
            os.killpg(self.core.pid, signal.SIGINT)
            self.core.wait(timeout=30)

    def node(self, *params, log, **env):
        """The node in namespace /t with private parameter overrides ``name:=value``."""
        args = [sys.executable, NODE, "__ns:=/t", "__name:=depth_node"] + ["_" + p for p in params]
        return subprocess.Popen(args, env=dict(self.env, **env), stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def param(self, name):
        out = subprocess.run(["rosparam", "get", name], env=self.env, stdout=subprocess.PIPE, check=True)
        return yaml.safe_load(out.stdout)


@pytest.fixture
def master(tmp_path):
    m = Master(tmp_path)
    m.start()
    yield m
    m.stop()


def _run(master, tmp_path, *params, timeout=60, **env):
    log = tmp_path / "node.log"
    start = time.monotonic()
    proc = master.node(*params, log=log, **env)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, time.monotonic() - start, log.read_text()


def _fatal(output):
    return [line for line in output.splitlines() if "[FATAL]" in line]


def _wait_for(path, text, proc, timeout):
    deadline = time.time() + timeout
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()[-3000:]
        assert time.time() < deadline, "waited %.0f s for %r:\n%s" % (timeout, text, path.read_text()[-3000:])
        time.sleep(0.2)


@pytest.mark.parametrize("params, words", [
    (("backend:=tensorrt",), "tensorrt"),
    (("device:=cuda",), "cuda"),
])
def test_a_backend_or_device_it_cannot_use_stops_the_node_at_start(master, tmp_path, tiny_dir, params, words):
    code, seconds, output = _run(master, tmp_path, "model:=" + tiny_dir, "input_size:=56", *params)
    fatal = _fatal(output)
    assert code == 1 and len(fatal) == 1 and words in fatal[0], output[-3000:]
    assert "Traceback" not in output
    assert seconds < 30


def test_every_bad_parameter_is_one_fatal_line(master, tmp_path, tiny_dir):
    code, _seconds, output = _run(master, tmp_path, "model:=" + tiny_dir, "diagnostics_period:=0",
                                  "jpeg_quality:=500", "input_size:=-3")
    fatal = _fatal(output)
    assert code == 2 and len(fatal) == 3, output[-3000:]
    for name in ("~diagnostics_period", "~jpeg_quality", "~input_size"):
        assert sum(name in line for line in fatal) == 1, name
    assert "Traceback" not in output


def test_sigint_during_a_long_inference_exits_cleanly(master, tmp_path):
    from depth_fixtures import stream_fixture

    bag = stream_fixture(str(tmp_path / "stream.bag"), count=30, rate=30.0, veh="t")
    log = tmp_path / "node.log"
    proc = master.node("model:=random:da2-small", "input_size:=518", "expected_frame_size:=[64, 48]", log=log)
    try:
        _wait_for(log, "listening on", proc, timeout=120)
        play = subprocess.Popen(["rosbag", "play", bag], env=master.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        time.sleep(2.5)  # a 1280x720 frame at 518 (518x924) takes seconds here: the worker is inside it
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        seconds = time.monotonic() - start
        play.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code == 0 and "terminate called" not in output, output[-3000:]
    assert seconds < 5.0


def test_the_node_leaves_when_the_master_restarts(master, tmp_path, tiny_dir):
    log = tmp_path / "node.log"
    proc = master.node("model:=" + tiny_dir, "input_size:=56", log=log)
    try:
        _wait_for(log, "listening on", proc, timeout=120)
        master.stop()
        time.sleep(1.5)
        master.start()
        returned = time.monotonic()
        code = proc.wait(timeout=30)
        seconds = time.monotonic() - returned
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    fatal = _fatal(output)
    assert code == 3 and len(fatal) == 1 and "restarted" in fatal[0], output[-3000:]
    assert seconds < 10.0


def test_every_output_gets_a_header_of_its_own():
    """rospy writes ``seq`` into the header of each message it publishes: outputs sharing the camera
    message's header object would overwrite each other's (and the camera message's) seq."""
    import importlib.util

    import numpy as np
    import rospy
    from std_msgs.msg import Header

    spec = importlib.util.spec_from_file_location("depth_node_module", NODE)
    node = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node)
    camera = Header(seq=41, stamp=rospy.Time(12, 345), frame_id="/t/camera_optical_frame")
    depth = node.to_image(camera, np.zeros((2, 3), np.float32), "32FC1")
    color = node.to_image(camera, np.zeros((2, 3, 3), np.uint8), "bgr8")
    headers = [depth.header, color.header, node.header_like(camera)]
    assert len({id(h) for h in headers + [camera]}) == 4
    for h in headers:
        assert (h.stamp, h.frame_id) == (camera.stamp, camera.frame_id)
    depth.header.seq = 7  # what rospy does on publish
    assert camera.seq == 41 and color.header.seq != 7


def test_the_robots_own_file_overrides_the_defaults_but_not_explicit_values(master, tmp_path, tiny_dir):
    """config/depth_node/<veh>.yaml (here from $DEPTH_NODE_CONFIG_DIR) over default.yaml, like dt-core;
    a parameter given explicitly (here ``_input_size:=56``) keeps its value."""
    (tmp_path / "t.yaml").write_text("colormap: turbo\nprocess_frequency: 3.0\ninput_size: 84\n")
    log = tmp_path / "node.log"
    proc = master.node("model:=" + tiny_dir, "input_size:=56", log=log, DEPTH_NODE_CONFIG_DIR=str(tmp_path))
    try:
        _wait_for(log, "listening on", proc, timeout=120)
        assert master.param("/t/depth_node/colormap") == "turbo"
        assert master.param("/t/depth_node/process_frequency") == 3.0
        assert master.param("/t/depth_node/input_size") == 56
        assert master.param("/t/depth_node/jpeg_quality") == 85  # not in the robot file: default.yaml's
        output = log.read_text()
        assert "input short side 56" in output and "kept the explicitly given input_size" in output
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_a_robot_file_with_an_unknown_name_stops_the_node(master, tmp_path, tiny_dir):
    (tmp_path / "t.yaml").write_text("colour_map: turbo\n")
    code, _seconds, output = _run(master, tmp_path, "model:=" + tiny_dir, "input_size:=56",
                                  DEPTH_NODE_CONFIG_DIR=str(tmp_path))
    fatal = _fatal(output)
    assert code == 2 and len(fatal) == 1, output[-3000:]
    assert "t.yaml: unknown parameter ~colour_map" in fatal[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_model_load_exits_at_once(master, tmp_path, signum):
    """random:da2-small takes seconds to build here (a TensorRT build: minutes); the node leaves
    without finishing the load."""
    log = tmp_path / "node.log"
    proc = master.node("model:=random:da2-small", "input_size:=518", log=log)
    try:
        _wait_for(log, "loading random:da2-small", proc, timeout=60)
        time.sleep(0.5)
        proc.send_signal(signum)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code == 0 and "listening on" not in output, output[-3000:]  # left before the load finished
    assert "Traceback" not in output and "terminate called" not in output


def test_a_named_extrinsics_file_that_does_not_exist_stops_the_node(master, tmp_path, tiny_dir):
    """A typo in extrinsics_file is no fallback to the generic pose (0.34 m read for a true 0.50 m)."""
    code, _seconds, output = _run(master, tmp_path, "model:=" + tiny_dir, "input_size:=56", "metric:=true",
                                  "extrinsics_file:=/nonexistent/robot_extrinsics.yaml")
    fatal = _fatal(output)
    assert code == 2 and len(fatal) == 1, output[-3000:]
    assert "/nonexistent/robot_extrinsics.yaml: no such file" in fatal[0]


def test_each_valid_run_time_change_applies_and_each_bad_one_is_said(master, tmp_path, tiny_dir):
    """``colormap notacolormap`` set together with good values: the good ones are taken at once, the
    bad one is one WARN line (not repeated at every poll)."""
    log = tmp_path / "node.log"
    proc = master.node("model:=" + tiny_dir, "input_size:=56", log=log)
    try:
        _wait_for(log, "listening on", proc, timeout=120)
        for name, value in (("colormap", "notacolormap"), ("process_frequency", "2.0"), ("jpeg_quality", "10"),
                            ("color_percentiles", "[50, 10]")):
            subprocess.run(["rosparam", "set", "/t/depth_node/" + name, value], env=master.env, check=True)
        _wait_for(log, "jpeg_quality=10", proc, timeout=30)
        _wait_for(log, "process_frequency=2.0", proc, timeout=30)
        time.sleep(2.0)  # four more polls
        output = log.read_text()
        refused = [line for line in output.splitlines() if "ignored a run-time parameter change" in line]
        assert sum("~colormap" in line for line in refused) == 1, output[-3000:]
        assert sum("~color_percentiles" in line for line in refused) == 1, output[-3000:]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
