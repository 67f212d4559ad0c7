"""What a user reads and what other software gets at the node's edges (issue 22): one policy for a
camera_info that does not describe the frame, no inference while nobody listens (and diagnostics say
so), and diagnostics that name the first real cause."""
import os

import numpy as np
import yaml

from depth_estimation.framepath.gate import IDLE
from depth_estimation.framepath.health import ERROR, OK, NodeHealth
from depth_estimation.framepath.metric import MetricOptions, MetricOutputs
from depth_estimation.framepath.params import check_params
from depth_estimation.geometry.calibration import ground_plane, read_extrinsics, read_intrinsics
from depth_estimation.geometry.ground import ground_depth_map
from depth_estimation.io.paths import PACKAGE_DIR
from depth_estimation.runtime.timing import StageTimer

from conftest import ROOT

ROBOT = os.path.join(ROOT, "assets", "calibrations", "csc22917")


def options(**changes):
    with open(os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")) as f:
        raw = yaml.safe_load(f)
    raw.update(metric=True, extrinsics_file=os.path.join(ROBOT, "extrinsic.yaml"), metric_time_constant=0.0)
    raw.update(changes)
    return MetricOptions.from_params(check_params(raw))


def robot_info():
    with open(os.path.join(ROBOT, "intrinsic.yaml")) as f:
        return yaml.safe_load(f)


def ground_disparity(height=480, width=640):
    intrinsics = read_intrinsics(os.path.join(ROBOT, "intrinsic.yaml"))
    plane = ground_plane(read_extrinsics(os.path.join(ROBOT, "extrinsic.yaml")), intrinsics)
    depth = np.nan_to_num(np.array(ground_depth_map(plane, intrinsics, height, width)), nan=50.0)
    return (3.0 / depth + 0.25).astype(np.float32)


def test_a_camera_info_of_another_size_is_refused_by_the_metric_outputs_as_by_the_depth_outputs():
    """The depth outputs refuse a camera_info that does not describe the frame; the metric outputs
    did not (they rescaled the intrinsics, non-uniformly for another aspect ratio): now one policy."""
    outputs = MetricOutputs(options(), "csc22917")
    said = []
    outputs.warn = lambda kind, text: said.append(text)
    assert outputs.process(ground_disparity(), 0.0, robot_info()).frame.state == "OK"
    for height, width in ((240, 320), (360, 640)):  # half size, and another aspect ratio
        assert outputs.process(np.ones((height, width), np.float32), 1.0, robot_info()) is None
        assert "camera_info is 640x480 but the frame is %dx%d" % (width, height) in outputs.report(1.0)[1]
    assert said and "nothing metric" in said[-1]


def test_the_rectified_metric_depth_comes_with_its_own_camera_info():
    outputs = MetricOutputs(options(), "csc22917")
    products = outputs.process(ground_disparity(), 0.0, robot_info())
    depth, camera = outputs.rectified(products)
    assert depth.shape == (480, 640) and depth.dtype == np.float32 and np.isfinite(depth).mean() > 0.3
    P = np.reshape(camera.P, (3, 4))
    assert camera.D == (0.0,) * 5 and np.allclose(np.reshape(camera.K, (3, 3)), P[:, :3])
    assert np.allclose(P, np.reshape(robot_info()["projection_matrix"]["data"], (3, 4)))
    assert outputs.rectified(products)[1] is camera  # made once per camera


def health():
    return NodeHealth(StageTimer(), {"model": "m", "backend": "torch", "device": "cpu"}, stall_after=2.0)


def test_idle_frames_are_counted_and_said_and_a_new_subscriber_starts_the_stall_clock():
    h = health()
    h.frame_in(0.0, dropped_previous=False)
    h.frame_out(0.1, stamp=0.0)
    for i in range(30):
        h.frame_skipped(1.0 + 0.1 * i, IDLE, seq=i)
    level, message, values = h.report(10.0)
    assert (level, message) == (OK, "idle: no subscribers (30 frame(s) not processed)")
    assert values["frames_idle"] == "30" and values["frames_in"] == "31"
    h.frame_in(10.5, dropped_previous=False)  # someone subscribes: frames go to the network again
    assert h.report(11.0)[0] == OK  # not "stalled for 10 s"
    h.frame_in(12.8, dropped_previous=False)
    assert h.report(13.0)[0] == ERROR  # no depth for 2.5 s since then: stalled


def test_a_stall_names_its_cause_when_every_frame_since_the_last_output_was_rejected():
    h = health()
    h.frame_in(0.0, dropped_previous=False)
    h.frame_out(0.1, stamp=0.0)
    for i in range(20):
        h.frame_in(0.5 + 0.2 * i, dropped_previous=False)
        h.frame_rejected("corrupt")
    level, message, _ = h.report(4.5)
    assert level == ERROR and "stalled" in message and "rejected as corrupt (20)" in message
    h.frame_in(4.6, dropped_previous=False)
    h.frame_out(4.7, stamp=4.6)
    h.frame_in(7.0, dropped_previous=False)  # the network hangs, nothing is rejected: the plain stall
    assert h.report(7.5) == (ERROR, "output stalled: no depth for 2.8 s while camera frames arrive",
                             h.report(7.5)[2])


def test_no_confident_fit_is_said_before_the_default_calibration_warning(tmp_path):
    """A robot without its own calibration runs on the default with a warning; when the fit then
    fails, the message names the failure (with the default as its likely cause), not only the file."""
    outputs = MetricOutputs(options(extrinsics_file=""), "nobody", calibrations=str(tmp_path))
    assert outputs.warning and "default" in outputs.warning
    assert outputs.report(0.0)[1] == outputs.warning  # nothing else to say yet
    flat = np.full((480, 640), 0.5, np.float32)  # no ground in sight: no confident fit
    for i in range(40):
        outputs.process(flat, 0.1 * i, robot_info())
    message = outputs.report(4.0)[1]
    assert message.startswith("metric depth: no confident ground fit") and outputs.warning in message


def test_depth_eval_ground_makes_metres_with_the_nodes_conversion_and_range():
    """depth-eval --align ground clamped far pixels to 10 m and scored them; the node publishes NaN
    beyond metric_max_range (5 m). One conversion (geometry.ground.metric_depth), one default."""
    from depth_estimation.evaluation.ground_align import GroundScorer
    from depth_estimation.geometry import ground as ground_fit

    with open(os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")) as f:
        assert yaml.safe_load(f)["metric_max_range"] == ground_fit.DEFAULT_MAX_RANGE_M
    intrinsics = read_intrinsics(os.path.join(ROBOT, "intrinsic.yaml"))
    scorer = GroundScorer(intrinsics, extrinsics=os.path.join(ROBOT, "extrinsic.yaml"))
    disparity = ground_disparity()
    depth, record = scorer.metric(0, disparity, "disparity")
    assert record["ground_ok"]
    node = MetricOutputs(options(), "csc22917").process(disparity, 0.0, robot_info()).frame.depth_m
    assert np.array_equal(np.isnan(depth), np.isnan(node))
    assert np.allclose(depth[~np.isnan(depth)], node[~np.isnan(node)], rtol=1e-3)
    assert np.isnan(depth[:100]).all() and np.nanmax(depth) <= 5.0  # the far ground and the sky: unknown
