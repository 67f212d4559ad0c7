"""The node's frame stream (framepath.stream): stages overlap, newest frame wins, every frame counted.

The tiny model runs for real; a gate on the network call (an Event) holds a frame inside the
network so that the tests see, without timing anything, what the other stages do meanwhile.
"""
import os
import threading

import cv2
import numpy as np
import pytest
import yaml

from depth_estimation.framepath.params import check_params
from depth_estimation.framepath.pipeline import pipeline_from_params, start_pipeline
from depth_estimation.framepath.stream import Frame, FrameStream
from depth_estimation.io.paths import PACKAGE_DIR

CONFIG = os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")
WAIT = 30.0  # seconds: generous, only a broken stream ever waits this long


def params(model):
    with open(CONFIG) as f:
        raw = yaml.safe_load(f)
    raw.update(model=model, input_size=56, expected_frame_size=[64, 48])
    return raw


class HeldNetwork:
    """Wraps the estimator's network call: each call announces itself and waits to be released."""

    def __init__(self, estimator):
        self.run, self.calls = estimator.run, []
        self.entered, self.release = threading.Semaphore(0), threading.Semaphore(0)
        estimator.run = self

    def __call__(self, prepared):
        self.calls.append(prepared.frame_hw)
        self.entered.release()
        assert self.release.acquire(timeout=WAIT), "the test never released the network"
        return self.run(prepared)


class Recorder:
    def __init__(self):
        self.published, self.event = [], threading.Event()

    def __call__(self, frame, result):
        self.published.append((frame.meta, frame.stamp, result.depth.shape, result.colorized_jpeg is not None))
        self.event.set()

    def wait(self, count):
        for _ in range(int(WAIT * 20)):
            if len(self.published) >= count:
                return True
            self.event.wait(0.05)
            self.event.clear()
        return False


def wait_until(condition, steps=int(WAIT * 100)):
    """Poll ``condition`` every 10 ms (at most ``WAIT`` s); its last value."""
    for _ in range(steps):
        if condition():
            return True
        threading.Event().wait(0.01)
    return condition()


def jpeg(height, width, value):
    image = np.full((height, width, 3), value, np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture
def stream_parts(tiny_dir):
    return start_pipeline(check_params(params(tiny_dir)))


def test_the_next_frame_is_decoded_and_the_previous_published_while_the_network_works(stream_parts):
    pipeline, health = stream_parts
    held, out = HeldNetwork(pipeline.estimator), Recorder()
    decoded = []
    prepare = pipeline.prepare
    pipeline.prepare = lambda data, fmt="": decoded.append(len(data)) or prepare(data, fmt)
    stream = FrameStream(pipeline, health, out).start()
    try:
        stream.submit(Frame(jpeg(48, 64, 10), "jpeg", 1.0, "header-1"))
        assert held.entered.acquire(timeout=WAIT)  # frame 1 is inside the network
        stream.submit(Frame(jpeg(60, 80, 20), "jpeg", 2.0, "header-2"))
        assert stream.wait_for_room(WAIT)
        # frame 2 gets decoded while frame 1 is still held in the network
        assert wait_until(lambda: len(decoded) == 2) and not out.published
        held.release.release()  # frame 1 leaves the network; frame 2 enters it and is held
        assert held.entered.acquire(timeout=WAIT)
        assert out.wait(1)  # frame 1 is published while frame 2 is held in the network
        assert out.published[0][:3] == ("header-1", 1.0, (48, 64))
        held.release.release()
        assert out.wait(2) and out.published[1][:3] == ("header-2", 2.0, (60, 80))
    finally:
        held.release.release()
        stream.close()
    assert health.frames_in == health.frames_out == 2 and health.frames_dropped == 0


def test_a_busy_network_drops_older_frames_counted_by_stage_and_publishes_the_newest(stream_parts):
    pipeline, health = stream_parts
    held, out = HeldNetwork(pipeline.estimator), Recorder()
    stream = FrameStream(pipeline, health, out).start()
    try:
        stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
        assert held.entered.acquire(timeout=WAIT)
        for i in range(1, 8):  # the network holds frame 0: frames queue up nowhere
            assert stream.wait_for_room(WAIT)
            stream.submit(Frame(jpeg(48, 64, i), "jpeg", float(i), i))
        assert wait_until(lambda: health.frames_dropped == 6)
        for _ in range(2):
            held.release.release()
        assert out.wait(2) and wait_until(stream.idle)
    finally:
        for _ in range(4):
            held.release.release()
        stream.close()
    assert [p[0] for p in out.published] == [0, 7]  # the newest frame, never a backlog
    assert health.frames_in == 8 and health.frames_out == 2 and health.frames_dropped == 6
    assert health.dropped_stages["decode"] == 6  # decoded, then replaced before the network was free
    assert len(held.calls) == 2


def test_bad_frames_and_failing_stages_are_counted_and_the_stream_goes_on(stream_parts):
    pipeline, health = stream_parts
    out, failures = Recorder(), []
    run = pipeline.estimator.run

    def flaky(prepared):
        if prepared.frame_hw == (50, 50):
            raise RuntimeError("CUDA error: out of memory")
        return run(prepared)

    pipeline.estimator.run = flaky
    stream = FrameStream(pipeline, health, out, warn=lambda kind, text: failures.append(kind)).start()
    try:
        for i, data in enumerate([b"not a jpeg at all", jpeg(50, 50, 1), jpeg(48, 64, 2)]):
            assert stream.wait_for_room(WAIT)
            stream.submit(Frame(data, "jpeg", float(i), i))
            assert wait_until(stream.idle)
    finally:
        stream.close()
    assert [p[0] for p in out.published] == [2]
    assert health.frames_rejected == 1 and health.inference_errors == 1 and "out of memory" in health.last_error
    assert failures[-1] == "error" and len(failures) == 2
    assert health.frames_in == health.frames_out + health.frames_rejected + health.inference_errors


def test_frames_switched_off_in_flight_are_withheld_not_published(stream_parts):
    pipeline, health = stream_parts
    held, out = HeldNetwork(pipeline.estimator), Recorder()
    on = [True]
    stream = FrameStream(pipeline, health, out, active=lambda: on[0]).start()
    try:
        stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
        assert held.entered.acquire(timeout=WAIT)
        on[0] = False  # ~switch false while the frame is in the network
        held.release.release()
        assert wait_until(stream.idle)
    finally:
        stream.close()
    assert not out.published and health.frames_paused == 1 and health.frames_out == 0


@pytest.mark.parametrize("pipelined", [True, False])
def test_serial_and_pipelined_streams_publish_the_same_depth(tiny_dir, real_jpeg, pipelined):
    checked = check_params(params(tiny_dir))
    reference = pipeline_from_params(checked)
    reference.estimator.load()
    expected = reference.process(real_jpeg, "jpeg").depth
    pipeline, health = start_pipeline(checked)
    got = []
    stream = FrameStream(pipeline, health, lambda frame, result: got.append(result), pipelined=pipelined).start()
    try:
        stream.submit(Frame(real_jpeg, "jpeg", 0.0, None))
        wait_until(lambda: got)
    finally:
        stream.close()
    assert len(got) == 1 and np.array_equal(got[0].depth, expected)
    assert got[0].colorized_jpeg is not None
    assert (health.frames_in, health.frames_out, health.frames_dropped, health.inference_errors) == (1, 1, 0, 0)


def test_wait_for_network_paces_a_camera_to_the_network(stream_parts):
    pipeline, health = stream_parts
    held, out = HeldNetwork(pipeline.estimator), Recorder()
    stream = FrameStream(pipeline, health, out).start()
    try:
        stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
        assert held.entered.acquire(timeout=WAIT) and stream.wait_for_network(WAIT)  # frame 0 in the network
        stream.submit(Frame(jpeg(48, 64, 1), "jpeg", 1.0, 1))
        # decoded, it waits for the busy network: the next camera frame would only be dropped
        assert wait_until(lambda: not stream.wait_for_network(0))
        held.release.release()
        assert held.entered.acquire(timeout=WAIT) and stream.wait_for_network(WAIT)
        held.release.release()
        assert out.wait(2) and wait_until(stream.idle)
    finally:
        held.release.release()
        stream.close()
    assert health.frames_dropped == 0 and [p[0] for p in out.published] == [0, 1]
