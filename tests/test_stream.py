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


def counted(health):
    return (health.frames_out + health.frames_dropped + health.frames_rejected + health.inference_errors
            + health.frames_paused)


def ended(stream):
    """Every frame submitted to ``stream`` has ended in one of its health counts."""
    return lambda: counted(stream.health) == stream.health.frames_in


def jpeg(height, width, value):
    image = np.full((height, width, 3), value, np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture
def stream_parts(tiny_dir):
    return start_pipeline(check_params(params(tiny_dir)))


def counted_prepare(pipeline):
    """Records the bytes count of every frame the decode stage decodes."""
    decoded, prepare = [], pipeline.prepare
    pipeline.prepare = lambda data, fmt="": decoded.append(len(data)) or prepare(data, fmt)
    return decoded


class FakeTimer:
    """The stream's duration clock, moved by the test; each reading is counted (``reads``)."""

    def __init__(self):
        self.now, self.reads = 0.0, threading.Semaphore(0)

    def __call__(self):
        self.reads.release()
        return self.now

    def read_again(self):
        """Wait until the stream has read this clock afresh (it looks at it in every wait)."""
        while self.reads.acquire(blocking=False):
            pass
        return self.reads.acquire(timeout=WAIT)


def test_the_newest_frame_is_decoded_just_before_the_network_is_free_and_the_previous_published(
        stream_parts):
    pipeline, health = stream_parts
    held, out = HeldNetwork(pipeline.estimator), Recorder()
    decoded, timer = counted_prepare(pipeline), FakeTimer()
    stream = FrameStream(pipeline, health, out)
    stream.timer = timer
    stream.mean_s.update(infer=1.0, decode=0.1)  # a network known to take 1 s, a decode 0.1 s
    stream.start()
    try:
        stream.submit(Frame(jpeg(48, 64, 10), "jpeg", 1.0, "header-1"))
        assert held.entered.acquire(timeout=WAIT)  # frame 1 is inside the network since t=0
        stream.submit(Frame(jpeg(60, 80, 20), "jpeg", 2.0, "header-2"))
        timer.now = 0.5
        assert timer.read_again() and len(decoded) == 1  # 0.5 s of network left: frame 2 waits
        stream.submit(Frame(jpeg(72, 96, 30), "jpeg", 3.0, "header-3"))  # replaces frame 2
        timer.now = 0.95  # the network ends within one decode: the newest frame is decoded now
        assert wait_until(lambda: len(decoded) == 2) and not out.published
        held.release.release()  # frame 1 leaves the network; frame 3 enters it at once and is held
        assert held.entered.acquire(timeout=WAIT)
        assert out.wait(1)  # frame 1 is published while frame 3 is held in the network
        assert out.published[0][:3] == ("header-1", 1.0, (48, 64))
        held.release.release()
        assert out.wait(2) and out.published[1][:3] == ("header-3", 3.0, (72, 96))
    finally:
        held.release.release()
        stream.close()
    assert health.frames_in == 3 and health.frames_out == 2 and dict(health.dropped_stages) == {"queue": 1}
    assert len(decoded) == 2 and len(held.calls) == 2


def test_a_busy_network_leaves_newer_frames_undecoded_and_publishes_the_newest(stream_parts):
    pipeline, health = stream_parts
    held, out = HeldNetwork(pipeline.estimator), Recorder()
    decoded, timer = counted_prepare(pipeline), FakeTimer()
    stream = FrameStream(pipeline, health, out)
    stream.timer = timer
    stream.start()
    try:
        stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
        assert held.entered.acquire(timeout=WAIT)
        for i in range(1, 8):  # the network holds frame 0 (its duration unknown): nothing is decoded
            stream.submit(Frame(jpeg(48, 64, i), "jpeg", float(i), i))
            assert timer.read_again()  # the decode stage looked again, and waits
        assert health.frames_dropped == 6 and len(decoded) == 1
        for _ in range(2):
            held.release.release()
        assert out.wait(2) and wait_until(ended(stream))
    finally:
        for _ in range(4):
            held.release.release()
        stream.close()
    assert [p[0] for p in out.published] == [0, 7]  # the newest frame, never a backlog
    assert health.frames_in == 8 and health.frames_out == 2 and health.frames_dropped == 6
    assert dict(health.dropped_stages) == {"queue": 6}  # replaced before decoding: none decoded in vain
    assert len(decoded) == 2 and len(held.calls) == 2


def test_the_network_takes_no_frame_while_the_output_stage_has_not_taken_its_last_result(stream_parts):
    pipeline, health = stream_parts
    out, gate, publishing = Recorder(), threading.Semaphore(0), threading.Semaphore(0)
    decoded, calls = counted_prepare(pipeline), []
    run = pipeline.estimator.run
    pipeline.estimator.run = lambda prepared: calls.append(prepared.frame_hw) or run(prepared)

    def publish(frame, result):
        publishing.release()
        assert gate.acquire(timeout=WAIT), "the test never released the output"
        out(frame, result)

    stream = FrameStream(pipeline, health, publish).start()
    try:
        stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
        assert publishing.acquire(timeout=WAIT)  # frame 0 is held in the output stage
        stream.submit(Frame(jpeg(48, 64, 1), "jpeg", 1.0, 1))
        assert wait_until(lambda: len(calls) == 2)  # frame 1's result waits for the output stage
        stream.submit(Frame(jpeg(48, 64, 2), "jpeg", 2.0, 2))
        assert wait_until(lambda: len(decoded) == 3)  # decoded, it waits for the network
        stream.submit(Frame(jpeg(48, 64, 3), "jpeg", 3.0, 3))  # waits for the decode stage ...
        stream.submit(Frame(jpeg(48, 64, 4), "jpeg", 4.0, 4))  # ... and is replaced there
        assert len(calls) == 2 and len(decoded) == 3
        for _ in range(4):
            gate.release()
        assert out.wait(4) and wait_until(ended(stream))
    finally:
        for _ in range(4):
            gate.release()
        stream.close()
    assert [p[0] for p in out.published] == [0, 1, 2, 4] and len(calls) == 4
    assert health.frames_in == 5 and dict(health.dropped_stages) == {"queue": 1}


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
            stream.submit(Frame(data, "jpeg", float(i), i))
            assert wait_until(ended(stream))
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
        assert wait_until(ended(stream))
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
        # it waits for the busy network: the next camera frame would only replace it
        assert wait_until(lambda: not stream.wait_for_network(0))
        held.release.release()
        assert held.entered.acquire(timeout=WAIT) and stream.wait_for_network(WAIT)
        held.release.release()
        assert out.wait(2) and wait_until(ended(stream))
    finally:
        held.release.release()
        stream.close()
    assert health.frames_dropped == 0 and [p[0] for p in out.published] == [0, 1]


def test_close_accounts_for_every_frame_in_flight_and_after(stream_parts):
    """One frame in the network, one waiting to be decoded: close() counts the waiting one at once and
    the network's one when it ends (withheld, not published); a frame submitted after close is counted
    in and withheld, never queued."""
    pipeline, health = stream_parts
    held, out = HeldNetwork(pipeline.estimator), Recorder()
    stream = FrameStream(pipeline, health, out).start()
    stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
    assert held.entered.acquire(timeout=WAIT)
    stream.submit(Frame(jpeg(48, 64, 1), "jpeg", 1.0, 1))
    assert stream.close(timeout=0.2) == 1  # the network's frame is still in hand
    assert (health.frames_in, counted(health)) == (2, 1)
    stream.submit(Frame(jpeg(48, 64, 2), "jpeg", 2.0, 2))
    assert (health.frames_in, counted(health)) == (3, 2)
    held.release.release()
    assert wait_until(ended(stream))
    assert not out.published and health.frames_paused == 3 and counted(health) == health.frames_in == 3
    assert all(not t.is_alive() for t in stream.threads if wait_until(lambda: not t.is_alive()))


def test_close_joins_the_stages_within_one_timeout(stream_parts):
    pipeline, health = stream_parts
    held = HeldNetwork(pipeline.estimator)
    stream = FrameStream(pipeline, health, Recorder()).start()
    stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
    assert held.entered.acquire(timeout=WAIT)
    joined = []
    for thread in stream.threads:  # record each join's timeout: one deadline for all, not 3 x timeout
        thread.join = (lambda join: lambda timeout=None: joined.append(timeout) or join(timeout))(thread.join)
    stream.close(timeout=0.3)
    held.release.release()
    # the held network's join lasts until close's deadline: the output stage's join after it gets nothing
    assert len(joined) == 3 and max(joined) <= 0.3 and joined[-1] == 0.0


@pytest.mark.parametrize("stage, where", [("decode", "prepare"), ("infer", "run"), ("postprocess", "finish"),
                                          ("colorize", "colorizer"), ("encode", "encode"),
                                          ("publish", "publish")])
@pytest.mark.parametrize("pipelined", [True, False])
def test_failures_are_counted_by_the_stage_that_raised(stream_parts, monkeypatch, stage, where, pipelined):
    pipeline, health = stream_parts

    def broken(*_args, **_kwargs):
        raise RuntimeError("broken " + where)

    out = Recorder()
    publish = out
    if where in ("prepare", "run", "finish"):
        monkeypatch.setattr(pipeline.estimator, where, broken)
    elif where == "colorizer":
        monkeypatch.setattr(pipeline, "colorizer", broken)
    elif where == "encode":
        from depth_estimation.framepath import frames

        monkeypatch.setattr(frames, "encode_jpeg", broken)
    else:
        publish = broken
    stream = FrameStream(pipeline, health, publish, pipelined=pipelined).start()
    try:
        stream.submit(Frame(jpeg(48, 64, 0), "jpeg", 0.0, 0))
        assert wait_until(ended(stream))
    finally:
        stream.close()
    level, message, values = health.report(1.0)
    assert values["inference_errors"] == "1" and values["errors_by_stage"] == stage + "=1"
    assert values["last_error"] == "%s: RuntimeError: broken %s" % (stage, where)
    assert "%s=1" % stage in message and not out.published
