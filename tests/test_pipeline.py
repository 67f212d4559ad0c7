"""The node's frame path without ROS: latest-frame hand-off, health/diagnostics, parameters."""
import ast
import os
import threading
import time

import numpy as np
import pytest
import yaml

from depth_estimation.framepath.frames import RejectedFrame
from depth_estimation.framepath.gate import PAUSED, THROTTLED, FrameGate
from depth_estimation.framepath.health import ERROR, OK, WARN, NodeHealth
from depth_estimation.framepath.params import (CHECKS, RUNTIME, ParameterError, check_params, read_param_file,
                                               robot_overrides, runtime_update)
from depth_estimation.framepath.pipeline import CameraInfoPairing, camera_info_problem, pipeline_from_params
from depth_estimation.framepath.slot import LatestSlot
from depth_estimation.runtime.timing import RateMeter, StageTimer

from conftest import ROOT

PKG = os.path.join(ROOT, "packages", "depth_estimation")
CONFIG = os.path.join(PKG, "config", "depth_node", "default.yaml")


def defaults():
    with open(CONFIG) as f:
        return yaml.safe_load(f)


def test_slot_keeps_only_the_newest_says_what_it_replaced_and_refuses_after_close():
    from depth_estimation.framepath.slot import SlotClosed

    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take(0) == 3 and slot.take(0) is None
    slot.put(4)
    slot.close()
    with pytest.raises(SlotClosed):
        slot.put(5)
    assert slot.take(0) == 4 and slot.take(0) is None  # what it held is still there to be counted


def test_slow_consumer_never_builds_a_backlog():
    """A producer 10x faster than its consumer, held in step by semaphores (no sleeps): the consumer
    always takes the newest item, every other one is counted as replaced, nothing queues up."""
    slot, taken, replaced = LatestSlot(), [], []
    go, took = threading.Semaphore(0), threading.Semaphore(0)

    def consumer():
        while True:
            go.acquire()
            item = slot.take(5.0)
            taken.append(item)
            took.release()
            if item is None:
                return

    worker = threading.Thread(target=consumer)
    worker.start()
    produced = 0
    for _ in range(20):
        for _ in range(10):  # ten frames arrive while the consumer is busy
            produced += 1
            replaced.append(slot.put(produced))
        go.release()
        assert took.acquire(timeout=5.0)
        assert taken[-1] == produced  # the newest, never a stale one
    slot.close()
    go.release()  # a take after close() returns None at once: that ends the consumer
    worker.join(5.0)
    assert taken[:-1] == list(range(10, 201, 10)) and sum(replaced) == 20 * 9


def test_health_reports_levels_and_required_keys():
    timer = StageTimer()
    health = NodeHealth(timer, {"model": "m", "backend": "torch", "device": "cpu"}, stall_after=2.0)
    level, message, values = health.report(100.0)
    for key in ("inference_ms_p50", "inference_ms_p95", "end_to_end_ms_p50", "decode_ms_p50",
                "postprocess_ms_p50", "input_hz", "output_hz", "frames_in", "frames_out",
                "frames_dropped", "frames_rejected", "model", "backend", "device"):
        assert key in values
    assert level == OK
    assert health.report(103.0)[0] == WARN  # no camera frames for 3 s
    for i in range(10):
        health.frame_in(103.0 + 0.1 * i, dropped_previous=i % 2 == 1, seq=100 + i + (i >= 5) * 3)
    timer.record("infer", 50.0)
    health.frame_out(104.0, stamp=103.9)
    level, message, values = health.report(104.0)
    assert level == OK, message
    assert values["frames_in"] == "10" and values["frames_dropped"] == "5" and values["frames_out"] == "1"
    assert values["frames_missed"] == "3"  # the camera's seq jumped by 4 once
    assert values["end_to_end_ms_p50"] == "100.0" and values["inference_ms_p50"] == "50.0"
    health.frame_rejected("truncated")
    level, message, values = health.report(104.5)
    assert level == WARN and "truncated" in message and values["frames_rejected"] == "1"
    assert health.report(104.6)[0] == OK  # a WARN for bad input lasts one report
    for i in range(40):
        health.frame_in(104.6 + 0.1 * i, dropped_previous=True)
    level, message, _ = health.report(108.6)
    assert level == ERROR and "stalled" in message


def test_rate_meter():
    meter = RateMeter(horizon=5.0)
    for i in range(31):
        meter.tick(10.0 + i / 30.0)
    assert meter.rate(11.0) == pytest.approx(30.0, rel=0.01)
    assert meter.rate(30.0) == 0.0


def test_default_config_builds_the_node_pipeline(tiny_dir):
    params = defaults()
    params["model"] = tiny_dir
    params["input_size"] = 56
    pipe = pipeline_from_params(params)
    pipe.estimator.load()
    from depth_fixtures import _jpeg

    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = pipe.process(_jpeg(rgb), "jpeg")
    assert result.depth.shape == (48, 64) and result.colorized.shape == (48, 64, 3)
    assert result.colorized_jpeg[:3] == b"\xff\xd8\xff"
    no_color = pipe.process(_jpeg(rgb), "jpeg", colorized=False, jpeg=False)
    assert no_color.colorized is None and no_color.colorized_jpeg is None
    for stage in ("decode", "infer", "colorize", "encode"):
        assert pipe.timer.percentile(stage, 50) is not None
    with pytest.raises(RejectedFrame):
        pipe.process(b"", "jpeg")


def test_node_reads_exactly_the_parameters_of_the_config_file():
    """One config source: every parameter the node reads (and checks) has its default in default.yaml."""
    source = open(os.path.join(PKG, "src", "depth_node.py")).read()
    assert 'rospy.get_param("~" + name) for name in CHECKS' in source
    assert set(CHECKS) == set(defaults())


def test_launch_overrides_are_node_parameters():
    import xml.etree.ElementTree as ET

    launch = ET.parse(os.path.join(PKG, "launch", "depth_node.launch")).getroot()
    overridden = [p.get("name") for p in launch.iter("param")]
    assert overridden and set(overridden) <= set(defaults())
    declared = {a.get("name") for a in launch.iter("arg")}
    assert {"veh", "model", "input_size", "backend", "device", "process_frequency"} <= declared


# ------------------------------------------------------------------ parameters, checked at start
def test_default_parameters_pass_the_checks():
    params = check_params(defaults())
    assert params["input_size"] == 308 and params["expected_frame_size"] == (640, 480)


@pytest.mark.parametrize("name, value, words", [
    ("diagnostics_period", 0, "diagnostics_period"),
    ("jpeg_quality", 500, "jpeg_quality"),
    ("device", "gpu", "auto, cpu, cuda"),
    ("backend", "tflite", "torch, onnxruntime, tensorrt"),
    ("input_size", -1, "input_size"),
    ("color_percentiles", [98, 2], "low < high"),
    ("colormap", "rainbowish", "colormap"),
    ("half", "yes", "true or false"),
    ("max_aspect", 0.5, "max_aspect"),
    ("expected_frame_size", [640], "[width, height]"),
    ("process_frequency", -1, "process_frequency"),
    ("process_frequency", "fast", "expected a number"),
])
def test_each_bad_parameter_is_named_in_one_line(name, value, words):
    raw = dict(defaults(), **{name: value})
    with pytest.raises(ParameterError) as caught:
        check_params(raw)
    assert len(caught.value.problems) == 1
    assert "~" + name in caught.value.problems[0] and words in caught.value.problems[0]


def test_several_bad_parameters_give_one_line_each():
    raw = dict(defaults(), jpeg_quality=0, stall_after=-1, min_side=100, max_side=50)
    del raw["threads"]
    problems = _problems(raw)
    assert len(problems) == 4, problems
    assert any("~threads is missing" in p for p in problems)
    assert any("~min_side 100 is above ~max_side 50" in p for p in problems)


def _problems(raw):
    with pytest.raises(ParameterError) as caught:
        check_params(raw)
    return caught.value.problems


# ------------------------------------------------------------- frame accounting and camera_info
def test_camera_info_pairs_with_the_frame_of_the_same_stamp():
    pairing = CameraInfoPairing(keep=3)
    for stamp in (30, 10, 20):  # out of order
        pairing.store(stamp, "info%d" % stamp)
    assert pairing.find(20) == "info20"  # not the newest (30)
    assert pairing.find(25) == "info20" and pairing.find(99) == "info30"
    assert pairing.find(5) is None
    pairing.store(40, "info40")  # keeps the last 3 received, whatever their stamps
    assert pairing.find(30) == "info20" and pairing.find(10) == "info10" and pairing.find(40) == "info40"


def test_camera_info_pairs_when_stamps_go_back_repeat_or_are_zero():
    """A looped bag (``rosbag play -l``) or a restarted simulator: the stamps start again from the
    beginning; the camera_info received last for a stamp is the one paired, none is thrown away for
    being older-stamped than the ones before it."""
    pairing = CameraInfoPairing(keep=60)
    loop = [1700 + i for i in range(80)]  # 80 frames, more than it keeps
    for lap in range(3):
        for stamp in loop:
            pairing.store(stamp, (lap, stamp))
            assert pairing.find(stamp) == (lap, stamp)
    restarted = CameraInfoPairing(keep=60)
    for stamp in loop:
        restarted.store(stamp, ("before", stamp))
    restarted.store(5, ("after", 5))  # a simulator restarted its clock
    assert restarted.find(5) == ("after", 5) and restarted.find(7) == ("after", 5)
    unstamped = CameraInfoPairing()
    assert unstamped.find(0) is None and not unstamped.received
    unstamped.store(0, "first")
    unstamped.store(0, "second")
    assert unstamped.find(0) == "second" and unstamped.received


def test_camera_info_problems_are_counted_apart_from_frames():
    class Info:
        width, height = 640, 480

    assert camera_info_problem(Info(), 480, 640) is None
    assert "640x480 but the frame is 1280x720" in camera_info_problem(Info(), 720, 1280)
    health = NodeHealth(StageTimer(), {"model": "m", "backend": "torch", "device": "cpu"})
    health.frame_in(1.0, dropped_previous=False)
    health.frame_out(1.1, stamp=1.0)
    health.camera_info_mismatch("camera_info is 640x480 but the frame is 1280x720")
    level, message, values = health.report(1.2)
    assert level == WARN and "without camera_info" in message and "1280x720" in message
    assert values["frames_rejected"] == "0" and values["camera_info_mismatches"] == "1"
    assert int(values["frames_in"]) == int(values["frames_out"]) + int(values["frames_dropped"])


def test_an_inference_error_is_counted_and_reported_at_error_level():
    health = NodeHealth(StageTimer(), {"model": "m", "backend": "torch", "device": "cpu"})
    for i in range(3):
        health.frame_in(1.0 + i, dropped_previous=False)
    health.frame_out(1.5, stamp=1.4)
    health.frame_failed("infer", "RuntimeError: CUDA error:\n  out of memory")
    health.frame_out(3.5, stamp=3.4)
    level, message, values = health.report(3.6)
    assert level == ERROR and "CUDA error: out of memory" in message and "infer=1" in message
    assert values["inference_errors"] == "1" and values["errors_by_stage"] == "infer=1"
    assert values["last_error"] == "infer: RuntimeError: CUDA error: out of memory"
    assert int(values["frames_in"]) == int(values["frames_out"]) + int(values["inference_errors"])
    assert health.report(3.7)[0] == OK  # the ERROR lasts one report; the count stays


def test_extreme_frames_never_reach_the_network(tiny_dir, real_jpeg):
    import cv2

    params = dict(defaults(), model=tiny_dir, input_size=56)
    pipe = pipeline_from_params(params)
    pipe.estimator.load()
    calls = []
    prepare = pipe.estimator.prepare
    pipe.estimator.prepare = lambda rgb: calls.append(rgb.shape) or prepare(rgb)
    strip = cv2.imencode(".jpg", np.zeros((16, 4096, 3), np.uint8))[1].tobytes()
    with pytest.raises(RejectedFrame) as caught:
        pipe.process(strip, "jpeg")
    assert caught.value.kind == "aspect" and not calls
    pipe.max_input_pixels = 56 * 56  # a 1280x720 frame at short side 56 is 56x98 > 56x56
    with pytest.raises(RejectedFrame) as caught:
        pipe.process(real_jpeg, "jpeg")
    assert caught.value.kind == "input_too_large" and not calls
    pipe.max_input_pixels = 56 * 98
    assert pipe.process(real_jpeg, "jpeg").depth.shape == (720, 1280) and calls == [(720, 1280, 3)]


def test_a_frame_with_an_exif_orientation_keeps_the_sensor_geometry(real_jpeg):
    from depth_fixtures import with_exif_orientation
    from depth_estimation.framepath.frames import decode

    plain = decode(real_jpeg)
    rotated_tag = decode(with_exif_orientation(real_jpeg, 6))
    assert rotated_tag.shape == plain.shape == (720, 1280, 3)
    assert np.array_equal(rotated_tag, plain)



# ------------------------------------------------ Duckietown: ~switch, ~process_frequency, parameters
def _counts(values):
    return {k: int(values[k]) for k in ("frames_in", "frames_out", "frames_dropped", "frames_rejected",
                                        "inference_errors", "frames_paused", "frames_throttled")}


def test_gate_pauses_and_throttles_by_camera_time():
    gate = FrameGate(frequency=2.0)
    stamps = [100 * 10 ** 9 + round(i * 1e9 / 30) for i in range(61)]  # 2 s of a 30 Hz camera
    admitted = [t for t in stamps if gate.admit(t) is None]
    assert len(admitted) == 5 and min(np.diff(admitted)) >= 0.5e9  # never more often than 2 Hz
    assert gate.admit(stamps[-1] + 10 ** 7) == THROTTLED
    gate.pause()
    assert gate.admit(200 * 10 ** 9) == PAUSED
    gate.resume()
    assert gate.admit(stamps[-1] + 2 * 10 ** 7) is None  # resumes with the next frame, whatever the spacing
    assert gate.admit(50 * 10 ** 9) is None  # the clock went back (a replayed bag): spacing starts anew
    gate.set_frequency(0.0)
    assert all(gate.admit(50 * 10 ** 9 + round(i * 1e9 / 30)) is None for i in range(1, 30))


@pytest.mark.parametrize("camera_hz, frequency, expected", [
    (30.0, 10.0, 100), (30.0, 7.5, 75), (30.0, 5.0, 50), (30.0, 15.0, 150), (30.0, 2.0, 20), (30.0, 12.0, 100),
    (15.0, 5.0, 50), (20.0, 10.0, 100),
])
def test_gate_keeps_the_promised_rate_of_an_exact_camera(camera_hz, frequency, expected):
    """10 s of an exact camera (integer-nanosecond stamps as a camera driver or a bag writes them):
    the rates the README promises, not 79 instead of 100 at 10 Hz (float seconds just under the
    period) and never faster than ``frequency`` (12 Hz of a 30 Hz camera: every third frame)."""
    for jitter_ns in (0, 2 * 10 ** 6):
        gate = FrameGate(frequency=frequency)
        rng = np.random.default_rng(0)
        stamps = [17 * 10 ** 17 + round(i * 1e9 / camera_hz) + int(rng.integers(-jitter_ns, jitter_ns + 1))
                  for i in range(int(10 * camera_hz))]
        admitted = [t for t in stamps if gate.admit(t) is None]
        assert len(admitted) == expected, (jitter_ns, len(admitted))
        assert min(np.diff(admitted)) > 1e9 / frequency - 1e9 / camera_hz / 2


def test_paused_and_throttled_frames_keep_the_accounting_exact():
    health = NodeHealth(StageTimer(), {"model": "m", "backend": "torch", "device": "cpu"}, stall_after=2.0)
    health.min_period = 10.0  # process_frequency 0.1 Hz: no depth for 10 s is no stall
    health.frame_in(1.0, dropped_previous=False, seq=1)
    health.frame_out(1.1, stamp=1.0)
    for i in range(2, 9):
        health.frame_skipped(1.0 + 0.9 * i, THROTTLED, seq=i)
    level, message, values = health.report(8.5)  # 7.4 s without depth at 0.1 Hz: not stalled
    assert level == OK, message
    health.set_paused(True, 8.0)
    health.frame_in(8.1, dropped_previous=False, seq=9)
    health.frame_withheld()  # queued, then switched off before the worker published it
    for i in range(10, 40):
        health.frame_skipped(8.0 + i / 30.0, PAUSED, seq=i)
    level, message, values = health.report(30.0)  # long without output: paused, not stalled
    assert level == OK and "paused" in message and values["paused"] == "true"
    counts = _counts(values)
    assert counts == dict(frames_in=39, frames_out=1, frames_dropped=0, frames_rejected=0, inference_errors=0,
                          frames_paused=31, frames_throttled=7)
    assert counts["frames_in"] == sum(v for k, v in counts.items() if k != "frames_in")
    health.set_paused(False, 30.0)
    assert health.report(31.0)[0] == OK and health.report(31.0)[2]["paused"] == "false"
    with pytest.raises(ValueError):
        health.frame_skipped(31.0, "bored")


def test_run_time_parameters_are_checked_and_only_changes_returned():
    params = check_params(defaults())
    assert set(RUNTIME) == {"colormap", "color_range", "color_percentiles", "color_vmin", "color_vmax",
                            "jpeg_quality", "process_frequency"}
    assert runtime_update(params, {"colormap": "inferno", "jpeg_quality": 85}) == ({}, [])
    assert runtime_update(params, {"colormap": "Turbo", "process_frequency": 2}) == ({
        "colormap": "turbo", "process_frequency": 2.0}, [])
    changes, problems = runtime_update(params, {"color_range": "fixed", "color_vmin": 5.0, "color_vmax": 1.0})
    assert len(problems) == 1 and "color_vmin" in problems[0] and changes == {"color_range": "fixed", "color_vmin": 5.0}
    changes, problems = runtime_update(params, {"model": "da2-base"})
    assert changes == {} and len(problems) == 1 and "restart" in problems[0]
    # both ends of the fixed range move together, though each alone would be refused
    assert runtime_update(dict(params, color_range="fixed"), {"color_vmin": 30.0, "color_vmax": 40.0})[0] == {
        "color_vmin": 30.0, "color_vmax": 40.0}


def test_one_bad_run_time_value_does_not_block_the_good_ones():
    """After ``colormap notacolormap``, ``process_frequency 2`` and ``jpeg_quality 10`` still apply."""
    params = check_params(defaults())
    changes, problems = runtime_update(params, {"colormap": "notacolormap", "process_frequency": 2,
                                                "jpeg_quality": 10, "color_percentiles": [50, 10]})
    assert changes == {"process_frequency": 2.0, "jpeg_quality": 10}
    assert len(problems) == 2 and "~colormap" in problems[0] and "~color_percentiles" in problems[1]


def test_a_robots_file_overrides_defaults_but_not_explicit_values(tmp_path):
    base = defaults()
    given = dict(base, model="/models/student", input_size=0)  # launch arguments
    robot = {"colormap": "turbo", "model": "da2-base", "input_size": 0, "process_frequency": 5}
    changes, kept = robot_overrides(given, base, robot, "ROBOT.yaml")
    assert changes == {"colormap": "turbo", "process_frequency": 5} and kept == ["model"]
    with pytest.raises(ParameterError) as caught:
        robot_overrides(given, base, {"colour_map": "turbo"}, "ROBOT.yaml")
    assert caught.value.problems == ["ROBOT.yaml: unknown parameter ~colour_map"]
    (tmp_path / "bad.yaml").write_text("colormap: [turbo\n")
    (tmp_path / "list.yaml").write_text("- colormap\n")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    for name in ("bad.yaml", "list.yaml", "missing.yaml"):
        with pytest.raises(ParameterError) as caught:
            read_param_file(str(tmp_path / name))
        assert name in caught.value.problems[0]
    assert read_param_file(str(tmp_path / "empty.yaml")) == {}
    assert read_param_file(CONFIG) == base


def test_the_pipeline_takes_new_colour_settings_from_the_next_frame(tiny_dir):
    import cv2

    from depth_fixtures import _jpeg

    params = check_params(dict(defaults(), model=tiny_dir, input_size=56))
    pipe = pipeline_from_params(params)
    pipe.estimator.load()
    frame = _jpeg(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    first = pipe.process(frame, "jpeg")
    params.update(runtime_update(params, {"colormap": "jet", "jpeg_quality": 20})[0])
    pipe.configure(params)
    second = pipe.process(frame, "jpeg")
    lo, hi = np.percentile(second.depth, (2, 98))
    scaled = np.clip((second.depth - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    assert np.array_equal(second.colorized, cv2.applyColorMap(scaled, cv2.COLORMAP_JET))
    assert not np.array_equal(first.colorized, second.colorized)
    assert len(second.colorized_jpeg) < len(first.colorized_jpeg)  # quality 20 < 85


def test_a_jpeg_with_trailing_bytes_is_a_frame_and_a_cut_one_is_not():
    """Decoders accept a JPEG followed by a few bytes after its end marker (some cameras pad frames);
    a JPEG cut before its end marker is still refused as truncated."""
    import cv2

    from depth_estimation.framepath import frames
    from depth_fixtures import _jpeg

    image = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    good = _jpeg(image)
    for tail in (b"\x00\x01\x02", b"\xff\xff\xff\xff", b"garbage after the image"):
        assert cv2.imdecode(np.frombuffer(good + tail, np.uint8), cv2.IMREAD_COLOR) is not None
        assert np.array_equal(frames.decode(good + tail), frames.decode(good))
    with pytest.raises(RejectedFrame) as caught:
        frames.decode(good[:len(good) // 2] + b"\x00\x01\x02")
    assert caught.value.kind == "truncated"
