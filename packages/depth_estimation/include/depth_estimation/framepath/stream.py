"""The node's frame path as a pipeline: decode | network | output, each stage in a thread of its own.

While the network works on frame *n*, frame *n+1* is decoded and prepared and frame *n-1* is
mapped back to the frame, colorized, encoded and published, so the output rate is that of the
slowest stage, not of their sum. Between two stages sits a :class:`~.slot.LatestSlot`.

Back-pressure: a stage takes a new frame only when the next stage has taken its previous output,
so no stage works on a frame that would then be dropped. The decode stage moreover takes the
newest camera frame *just in time*: when the network waits for a frame, or when the network's
current frame will end within about one decode (:data:`DECODE_LEAD`, from running means of both
stages' durations), so that the frame the network gets is as fresh as the camera allows. Camera
frames that arrive meanwhile replace each other before decoding and are counted as dropped there
(``frames_dropped_by_stage``: ``queue``; ``decode`` and ``infer`` count a result replaced after
those stages, which back-pressure prevents).
Every frame ends in exactly one of the :class:`~.health.NodeHealth` counts: published, dropped,
rejected (bad input, at decoding), an error (counted by the stage that raised: decode, infer,
postprocess, colorize, encode or publish; the stream goes on with the next frame) or withheld (the
node was switched off meanwhile, or the stream closed: :meth:`FrameStream.close` counts the frames
between stages and those still in a stage when they end).

The ROS node, ``depth-live`` and ``depth-bench``'s ``stream`` path all run this class; only the
``publish`` callback differs (ROS messages, a window, a latency record). Nothing here needs ROS.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2

from depth_estimation.framepath import frames
from depth_estimation.framepath.health import NodeHealth, error_line
from depth_estimation.framepath.pipeline import DepthPipeline, DepthResult
from depth_estimation.framepath.slot import LatestSlot, SlotClosed

STAGES = ("decode", "infer", "output")
POLL = 0.2  # seconds a stage waits for a frame before it looks at the stop flag again
MEAN_WEIGHT = 0.3  # weight of the newest duration in a stage's running mean (decode timing)
# the decode stage starts this many of its own running means before the network's frame is expected
# to end. Just in time (1.0) beat an earlier start (2 means + 5 ms) for the student on ONNX Runtime,
# paired in one process over 8 rounds: stream/bare 0.84 against 0.72, end-to-end p50 2.96 against 3.94x
# the bare p50 (README, "Frame stream"): a decode ahead of time takes the cores the network is using.
DECODE_LEAD, LEAD_SLACK = 1.0, 0.0
# OpenCV's own worker threads (decode, resize, colorize, encode) in a pipelined stream: the stages
# already run side by side, and OpenCV's pool would only take cores from the network (README, "CPU
# threads"); 0 leaves OpenCV's default. Process-wide: set when a pipelined stream starts.
CV_THREADS = 1


class Frame(NamedTuple):
    """One camera frame as it enters the stream."""

    data: bytes  # compressed (JPEG/PNG)
    fmt: str  # the message's format string ("jpeg", "rgb8; jpeg compressed bgr8", ...)
    stamp: float  # seconds of the caller's clock (the camera's time): the end-to-end latency's start
    meta: Any = None  # whatever the publisher needs (the ROS header), passed through untouched


def always(*_args: Any) -> bool:
    return True


def handle_frame(health: NodeHealth, step: Callable[[], Any],
                 warn: Callable[[str, str], None], stage: str = "infer") -> Optional[Any]:
    """``step()`` for one frame, its failure counted: a bad frame as rejected (by kind), anything
    else as an error of the stage that raised it (:class:`~.frames.StageFailed`; else ``stage``);
    ``warn(kind, text)`` gets one line. Returns what ``step`` returned, or None."""
    try:
        return step()
    except frames.RejectedFrame as exc:
        health.frame_rejected(exc.kind)
        warn(exc.kind, "dropped a bad input frame (%s); %d rejected so far" % (exc, health.frames_rejected))
    except Exception as exc:  # noqa: BLE001 - one failing frame must not stop the stream
        failed, cause = (exc.stage, exc.cause) if isinstance(exc, frames.StageFailed) else (stage, exc)
        health.frame_failed(failed, error_line(cause))
        warn("error", "%s failed on a frame (%s); %d failures so far, going on with the next frame"
             % (failed, error_line(cause), health.inference_errors))
    return None


class FrameStream:
    """Frames in (:meth:`submit`, any thread), depth out through ``publish(frame, result)``.

    ``wants()`` -> (colorized, jpeg) says per frame which images the output stage makes;
    ``active()`` False (switched off) withholds frames at every stage; ``clock`` is the clock of the
    frames' stamps (ROS time in the node); ``warn(kind, text)`` receives the per-frame problems.
    ``pipelined=False`` runs the three stages in series in one thread (the previous node).
    """

    def __init__(self, pipeline: DepthPipeline, health: NodeHealth,
                 publish: Callable[[Frame, DepthResult], None],
                 wants: Callable[[], Tuple[bool, bool]] = lambda: (True, True),
                 active: Callable[[], bool] = always, clock: Callable[[], float] = time.monotonic,
                 warn: Callable[[str, str], None] = lambda kind, text: None, pipelined: bool = True):
        self.pipeline, self.health, self.publish = pipeline, health, publish
        self.wants, self.active, self.clock, self.warn = wants, active, clock, warn
        self.pipelined = pipelined
        self.slots = [LatestSlot() for _ in (STAGES if pipelined else STAGES[:1])]
        self._stop = threading.Event()
        self._count_lock = threading.Lock()
        self.submitted = self.finished = 0
        self.threads: List[threading.Thread] = []
        # decode timing (pipelined): when the network started its frame (None: it waits for one) and
        # the running means of the decode and network durations, in seconds of ``timer``
        self.timer: Callable[[], float] = time.monotonic
        self._network = threading.Condition()
        self._network_since: Optional[float] = None
        self.mean_s = {"decode": None, "infer": None}  # type: Dict[str, Optional[float]]

    def start(self) -> "FrameStream":
        steps = [self._decode, self._infer, self._output] if self.pipelined else [self._serial]
        if self.pipelined and CV_THREADS:
            cv2.setNumThreads(CV_THREADS)
        for index, step in enumerate(steps):
            thread = threading.Thread(target=self._loop, args=(index, step), daemon=True,
                                      name="depth_" + (STAGES[index] if self.pipelined else "worker"))
            thread.start()
            self.threads.append(thread)
        return self

    def submit(self, frame: Frame, seq: Optional[int] = None) -> None:
        """A new camera frame: it replaces (drops) the one the decode stage has not taken yet; after
        :meth:`close` it is counted in and withheld at once."""
        with self._count_lock:
            self.submitted += 1
        try:
            replaced = self.slots[0].put(frame)
        except SlotClosed:
            self.health.frame_in(self.clock(), False, seq)
            self.health.frame_withheld()
            self._done()
            return
        if replaced:
            self._done()
        self.health.frame_in(self.clock(), replaced, seq)

    def withhold_queued(self) -> None:
        """Switched off: the frame waiting for the decode stage is not processed (counted as paused)."""
        if self.slots[0].take(timeout=0) is not None:
            self.health.frame_withheld()
            self._done()

    def wait_for_network(self, timeout: Optional[float] = None) -> bool:
        """Wait until the decode stage has taken the last frame submitted and the network the last one
        decoded (``depth-bench --stream-hz 0``: a camera exactly as fast as the stream, so no frame is
        decoded only to be dropped)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for slot in self.slots[:2]:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not slot.wait_empty(left):
                return False
        return True

    def close(self, timeout: float = 1.0) -> int:
        """Stop: the stages finish the frame in hand (joined together within ``timeout`` s), frames
        waiting between stages are counted as withheld, a frame finishing later too; so every frame
        submitted ends in one count. Returns how many frames are still in a stage (0 when all ended)."""
        self._stop.set()
        for slot in self.slots:
            slot.close()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        for slot in self.slots:
            if slot.take(timeout=0) is not None:
                self.health.frame_withheld()
                self._done()
        with self._count_lock:
            return self.submitted - self.finished

    def _done(self) -> None:
        with self._count_lock:
            self.finished += 1

    def _loop(self, index: int, step: Callable[[Any], Any]) -> None:
        source = self.slots[index]
        target = self.slots[index + 1] if index + 1 < len(self.slots) else None
        stage = STAGES[index] if self.pipelined else None
        while not self._stop.is_set():
            if target is not None and not target.wait_empty(POLL):
                continue  # back-pressure: the next stage has not taken the previous output yet
            if stage == "decode" and not self._decode_due():
                continue
            if stage == "infer":
                self._network_started(None)  # waits for a frame: the decode stage takes one now
            item = source.take(timeout=POLL)
            if item is None:
                continue
            if self._stop.is_set() or not self.active():  # closed or switched off after it was queued
                self.health.frame_withheld()
                self._done()
                continue
            started = self.timer()
            if stage == "infer":
                self._network_started(started)
            result = handle_frame(self.health, lambda: step(item), self.warn, stage or "infer")
            if stage in self.mean_s:
                self._measured(stage, self.timer() - started)
            self._hand_on(index, target, result)

    def _hand_on(self, index: int, target: Optional[LatestSlot], result: Any) -> None:
        """A stage's output to the next stage's slot, or the frame's end counted."""
        if target is None or result is None:  # published, or it failed (counted)
            self._done()
            return
        try:
            replaced = target.put(result)
        except SlotClosed:  # closed while this stage worked
            self.health.frame_withheld()
            self._done()
            return
        if replaced:
            self.health.frame_dropped(STAGES[index])
            self._done()

    def _network_started(self, when: Optional[float]) -> None:
        with self._network:
            self._network_since = when
            self._network.notify_all()

    def _measured(self, stage: str, seconds: float) -> None:
        with self._network:
            mean = self.mean_s[stage]
            self.mean_s[stage] = seconds if mean is None else mean + MEAN_WEIGHT * (seconds - mean)

    def _decode_due(self) -> bool:
        """True when the decode stage takes the newest camera frame now: the network waits for a frame,
        or its current one ends within the decode's lead (:data:`DECODE_LEAD`). Else it waits (at most
        :data:`POLL`) for that and returns False; with no network duration known yet it waits for the
        network to ask."""
        now = self.timer()
        with self._network:
            if self._network_since is None:
                return True
            infer_s, lead = self.mean_s["infer"], DECODE_LEAD * (self.mean_s["decode"] or 0.0) + LEAD_SLACK
            left = POLL if infer_s is None else self._network_since + infer_s - lead - now
            if left <= 0:
                return True
            self._network.wait(min(left, POLL))
            return False

    def _decode(self, frame: Frame) -> Tuple[Frame, Any]:
        return frame, self.pipeline.prepare(frame.data, frame.fmt)

    def _infer(self, item: Tuple[Frame, Any]) -> Tuple[Frame, Any, Any]:
        frame, prepared = item
        return frame, prepared, self.pipeline.infer(prepared)

    def _output(self, item: Tuple[Frame, Any, Any]) -> None:
        frame, prepared, prediction = item
        colorized, jpeg = self.wants()
        result = self.pipeline.finish(prepared, prediction, colorized, jpeg)
        self._publish(frame, result)

    def _serial(self, frame: Frame) -> None:
        colorized, jpeg = self.wants()
        self._publish(frame, self.pipeline.process(frame.data, frame.fmt, colorized, jpeg))

    def _publish(self, frame: Frame, result: DepthResult) -> None:
        if not self.active():  # switched off during the work: nothing more goes out
            self.health.frame_withheld()
            return
        with frames.failing_as("publish"):
            self.publish(frame, result)
        self.health.frame_out(self.clock(), frame.stamp)
