"""``depth-bench``'s ``stream`` path: the node's own frame stream, threads included, under a camera.

:func:`stream_stats` feeds :class:`~depth_estimation.framepath.stream.FrameStream` (decode | network
| colorize+encode, each in its thread, latest-frame slots between them: exactly what the node
runs) with real frames as JPEG bytes at ``hz`` frames per second (the DB21M camera sends 30), or,
with ``hz=0``, each frame as soon as the network has taken the previous one (the most the stream
can take without decoding frames only to drop them). It reports the output rate, the end-to-end
latency (frame in -> depth and its colour JPEG out, p50/p95) and the frames dropped, in all and by
stage, over the timed outputs.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from depth_estimation.framepath.health import NodeHealth
from depth_estimation.framepath.pipeline import DepthPipeline
from depth_estimation.framepath.stream import Frame, FrameStream

DEADLINE_S = 900.0  # a stream that has not produced its outputs by then is reported as it stands


class _Outputs:
    """What the stream published: (frame number, submitted, published) with a wake-up per frame."""

    def __init__(self, clock):
        self.clock, self.times, self.event = clock, [], threading.Event()

    def __call__(self, frame: Frame, _result: Any) -> None:
        self.times.append((frame.meta, frame.stamp, self.clock()))
        self.event.set()


def _drive(stream: FrameStream, outputs: _Outputs, frames: Sequence[bytes], hz: float, wanted: int,
           warmup: int, health: NodeHealth) -> Dict[str, int]:
    """Submit frames until ``wanted`` outputs exist; the counts at the end of the warm-up."""
    start, index, at_warmup = outputs.clock(), 0, None
    deadline = start + DEADLINE_S
    while len(outputs.times) < wanted and outputs.clock() < deadline:
        if at_warmup is None and len(outputs.times) >= warmup:
            at_warmup = {"in": health.frames_in, "dropped": health.frames_dropped,
                         "by_stage": dict(health.dropped_stages)}
        if hz > 0:
            delay = start + index / hz - outputs.clock()
            if delay > 0:
                time.sleep(delay)
        elif not stream.wait_for_network(0.5):
            continue
        stream.submit(Frame(frames[index % len(frames)], "jpeg", outputs.clock(), index))
        index += 1
    return at_warmup or {"in": 0, "dropped": 0, "by_stage": {}}


def stream_stats(pipeline: DepthPipeline, frames: Sequence[bytes], hz: float, runs: int,
                 warmup: int) -> Dict[str, Any]:
    """Output fps, end-to-end latency p50/p95 (ms) and drops of the node's stream over ``runs``
    outputs after ``warmup`` ones, with frames arriving at ``hz`` (0: as fast as it takes them)."""
    clock = time.perf_counter
    health = NodeHealth(pipeline.timer, {}, window=runs + warmup)
    outputs = _Outputs(clock)
    stream = FrameStream(pipeline, health, outputs, clock=clock).start()
    warmup = max(int(warmup), 1)  # the first output starts the clock of the rate
    try:
        before = _drive(stream, outputs, frames, hz, warmup + runs, warmup, health)
        after = {"in": health.frames_in, "dropped": health.frames_dropped,
                 "by_stage": dict(health.dropped_stages)}
    finally:
        stream.close()
    timed = outputs.times[warmup:warmup + runs]
    if not timed:
        return {"note": "stream: no output within %.0f s" % DEADLINE_S}
    first_out = outputs.times[warmup - 1][2]
    latencies = np.asarray([(out - sent) * 1000.0 for _, sent, out in timed])
    by_stage = {k: v - before["by_stage"].get(k, 0) for k, v in after["by_stage"].items()}
    return {"fps": len(timed) / max(timed[-1][2] - first_out, 1e-9),
            "latency_ms_p50": float(np.percentile(latencies, 50)),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
            "frames_in": after["in"] - before["in"], "frames_dropped": after["dropped"] - before["dropped"],
            "dropped_by_stage": ",".join("%s=%d" % kv for kv in sorted(by_stage.items()) if kv[1]),
            "errors": health.inference_errors + health.frames_rejected}


def metric_stats(runs: int, warmup: int, frame_hw: Tuple[int, int] = (480, 640)) -> Dict[str, Any]:
    """The metric outputs' own cost per frame (``path=metric``): ground fit, filter, metric depth, laser
    scan, obstacle distance and the decimated cloud, as the node adds them after the network, on a
    DB21's real calibration (assets/calibrations/csc22917) and a frame of its ground with a box ahead,
    under an unknown scale and shift (state OK, so every output is made)."""
    import yaml  # the node's parameters

    from depth_estimation.framepath.metric import MetricOptions, MetricOutputs
    from depth_estimation.framepath.params import check_params
    from depth_estimation.geometry.calibration import ground_plane, read_extrinsics
    from depth_estimation.geometry.camera import read_intrinsics
    from depth_estimation.geometry.ground import ground_depth_map
    from depth_estimation.io.paths import PACKAGE_DIR, REPO_DIR

    robot = os.path.join(REPO_DIR, "assets", "calibrations", "csc22917")
    with open(os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")) as f:
        params = yaml.safe_load(f)
    params.update(metric=True, extrinsics_file=os.path.join(robot, "extrinsic.yaml"))
    with open(os.path.join(robot, "intrinsic.yaml")) as f:
        info = yaml.safe_load(f)
    intrinsics = read_intrinsics(os.path.join(robot, "intrinsic.yaml")).for_frame(*frame_hw)
    plane = ground_plane(read_extrinsics(params["extrinsics_file"]), intrinsics)
    depth = np.nan_to_num(np.array(ground_depth_map(plane, intrinsics, *frame_hw)), nan=50.0)
    depth[frame_hw[0] // 3:frame_hw[0] // 2, frame_hw[1] // 2 - 30:frame_hw[1] // 2 + 30] = 0.5  # a box
    disparity = (3.0 / depth + 0.25).astype(np.float32)
    outputs = MetricOutputs(MetricOptions.from_params(check_params(params)), "")
    ms, states = [], set()
    for i in range(warmup + runs):
        start = time.perf_counter()
        out = outputs.process(disparity, 0.1 * i, info)
        if i >= warmup:
            ms.append((time.perf_counter() - start) * 1000.0)
            states.add(out.frame.state)
    return {"latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
            "fps": float(1000.0 / np.mean(ms)), "frame_hw": "%dx%d" % frame_hw,
            "note": "metric outputs only (state %s)" % "/".join(sorted(states))}
