"""The node's frame path without ROS: latest-frame hand-off, health/diagnostics, parameters."""
import ast
import os
import threading
import time

import numpy as np
import pytest
import yaml

from depth_estimation.framepath import pipeline
from depth_estimation.framepath.frames import RejectedFrame
from depth_estimation.framepath.pipeline import ERROR, OK, WARN, LatestSlot, NodeHealth, pipeline_from_params
from depth_estimation.runtime.timing import RateMeter, StageTimer

from conftest import ROOT

PKG = os.path.join(ROOT, "packages", "depth_estimation")
CONFIG = os.path.join(PKG, "config", "depth_node", "default.yaml")


def defaults():
    with open(CONFIG) as f:
        return yaml.safe_load(f)


def test_slot_keeps_only_the_newest_and_counts_replaced():
    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take(0) == 3 and slot.take(0) is None
    assert slot.replaced == 2


def test_slow_consumer_never_builds_a_backlog():
    """A producer at 'camera rate' and a consumer 20x slower: the consumer always gets recent items."""
    slot, taken, done = LatestSlot(), [], threading.Event()

    def consumer():
        while not done.is_set():
            item = slot.take(0.05)
            if item is not None:
                taken.append((item, produced[-1]))
                time.sleep(0.02)

    produced = [0]
    worker = threading.Thread(target=consumer)
    worker.start()
    for i in range(1, 200):
        produced.append(i)
        slot.put(i)
        time.sleep(0.001)
    done.set()
    worker.join()
    assert taken and len(taken) < 60
    lags = [newest - item for item, newest in taken]
    assert max(lags) < 40  # bounded by one consumer period, not growing with the stream
    assert slot.replaced + len(taken) >= 190


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
    """One config source: every parameter the node reads has its default in default.yaml."""
    tree = ast.parse(open(os.path.join(PKG, "src", "depth_node.py")).read())
    params = next(ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PARAMS")
    assert set(params) == set(defaults())


def test_launch_overrides_are_node_parameters():
    import xml.etree.ElementTree as ET

    launch = ET.parse(os.path.join(PKG, "launch", "depth_node.launch")).getroot()
    overridden = [p.get("name") for p in launch.iter("param")]
    assert overridden and set(overridden) <= set(defaults())
    declared = {a.get("name") for a in launch.iter("arg")}
    assert {"veh", "model", "input_size", "backend", "device"} <= declared
