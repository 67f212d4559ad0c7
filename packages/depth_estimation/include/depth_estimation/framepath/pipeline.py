"""The node's frame path without ROS: latest-frame hand-off, decode -> depth -> colour, health.

The node's subscriber callback only puts the message into a :class:`LatestSlot`; a worker
thread takes the newest frame, runs :class:`DepthPipeline` and publishes. A frame that is
replaced before the worker takes it is *dropped* (counted), so a slow model never builds a
backlog.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from depth_estimation.framepath import frames
from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.runtime.timing import RateMeter, Rolling, StageTimer

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


class LatestSlot:
    """A one-item mailbox: ``put`` replaces what the consumer has not taken yet."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.replaced = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced an untaken one (that one is dropped)."""
        with self._cond:
            dropped = self._item is not None
            self.replaced += int(dropped)
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: Optional[float] = None) -> Any:
        """The newest item (removing it), or None on timeout or after close()."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class DepthResult:
    depth: np.ndarray  # float32 HxW, relative inverse depth
    colorized: Optional[np.ndarray]  # bgr8 HxWx3
    colorized_jpeg: Optional[bytes]


def pipeline_from_params(params: Dict[str, Any]) -> DepthPipeline:
    """The node's pipeline from its parameters (config/depth_node/default.yaml + overrides)."""
    estimator = DepthEstimator(model=str(params["model"]), input_size=int(params["input_size"]) or None,
                               backend=str(params["backend"]), device=str(params["device"]),
                               threads=int(params["threads"]), half=bool(params["half"]))
    colorizer = Colorizer(colormap=str(params["colormap"]), range_mode=str(params["color_range"]),
                          percentiles=tuple(params["color_percentiles"]),
                          vmin=params.get("color_vmin"), vmax=params.get("color_vmax"))
    return DepthPipeline(estimator, colorizer, min_side=int(params["min_side"]),
                         max_side=int(params["max_side"]), jpeg_quality=int(params["jpeg_quality"]))


class DepthPipeline:
    """Compressed frame bytes -> depth (+ colour image and its JPEG). Raises frames.RejectedFrame."""

    def __init__(self, estimator: DepthEstimator, colorizer: Optional[Colorizer] = None,
                 min_side: int = 16, max_side: int = 4096, jpeg_quality: int = 90):
        self.estimator, self.colorizer = estimator, colorizer
        self.min_side, self.max_side, self.jpeg_quality = min_side, max_side, jpeg_quality
        self.timer: StageTimer = estimator.timer

    def process(self, data: bytes, fmt: str = "", colorized: bool = True, jpeg: bool = True) -> DepthResult:
        with self.timer.stage("decode"):
            bgr = frames.decode(data, fmt, self.min_side, self.max_side)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        depth = self.estimator.infer(rgb)
        color = color_jpeg = None
        if self.colorizer is not None and (colorized or jpeg):
            with self.timer.stage("colorize"):
                color = self.colorizer(depth)
            if jpeg:
                with self.timer.stage("encode"):
                    color_jpeg = frames.encode_jpeg(color, self.jpeg_quality)
        return DepthResult(depth, color, color_jpeg)


class NodeHealth:
    """Counters, rates and latencies of a depth node, summarised for diagnostics.

    Times are seconds of the caller's clock (ROS time, so it works under /use_sim_time).
    """

    def __init__(self, timer: StageTimer, info: Dict[str, str], stall_after: float = 5.0, window: int = 100):
        self.timer, self.info, self.stall_after = timer, dict(info), stall_after
        self.frames_in = self.frames_out = self.frames_dropped = self.frames_rejected = 0
        self.frames_missed = 0  # gaps in the camera's header.seq: lost before the node saw them
        self._last_seq: Optional[int] = None
        self.rejected_kinds: Counter = Counter()
        self.input_rate, self.output_rate = RateMeter(), RateMeter()
        self.end_to_end = Rolling(window)
        self.last_in: Optional[float] = None
        self.last_out: Optional[float] = None
        self.started: Optional[float] = None
        self._rejected_at_last_report = 0
        self._lock = threading.Lock()

    def frame_in(self, now: float, dropped_previous: bool, seq: Optional[int] = None) -> None:
        """A camera frame arrived; ``dropped_previous``: it replaced one never processed."""
        with self._lock:
            self.frames_in += 1
            if seq is not None and self._last_seq is not None and 0 < seq - self._last_seq <= 10000:
                self.frames_missed += seq - self._last_seq - 1  # a restart or reorder is no gap
            self._last_seq = seq if seq is not None else self._last_seq
            self.frames_dropped += int(dropped_previous)
            self.last_in = now
            self.input_rate.tick(now)

    def frame_rejected(self, kind: str) -> None:
        with self._lock:
            self.frames_rejected += 1
            self.rejected_kinds[kind] += 1

    def frame_out(self, now: float, stamp: float) -> None:
        with self._lock:
            self.frames_out += 1
            self.last_out = now
            self.output_rate.tick(now)
            self.end_to_end.add((now - stamp) * 1000.0)

    def report(self, now: float) -> Tuple[int, str, Dict[str, str]]:
        """(level, message, key/values) for a DiagnosticStatus."""
        if self.started is None:
            self.started = now
        with self._lock:
            values = dict(self.info)

            def ms(name: str, q: float) -> str:
                return _fmt(self.timer.percentile(name, q))

            values.update({
                "inference_ms_p50": ms("infer", 50), "inference_ms_p95": ms("infer", 95),
                "decode_ms_p50": ms("decode", 50), "preprocess_ms_p50": ms("preprocess", 50),
                "postprocess_ms_p50": ms("postprocess", 50), "colorize_ms_p50": ms("colorize", 50),
                "encode_ms_p50": ms("encode", 50),
                "end_to_end_ms_p50": _fmt(self.end_to_end.percentile(50)),
                "end_to_end_ms_p95": _fmt(self.end_to_end.percentile(95)),
                "input_hz": "%.2f" % self.input_rate.rate(now),
                "output_hz": "%.2f" % self.output_rate.rate(now),
                "frames_in": str(self.frames_in), "frames_out": str(self.frames_out),
                "frames_dropped": str(self.frames_dropped), "frames_rejected": str(self.frames_rejected),
                "frames_missed": str(self.frames_missed),
                "rejected_kinds": ",".join("%s=%d" % kv for kv in sorted(self.rejected_kinds.items())),
            })
            new_rejects = self.frames_rejected - self._rejected_at_last_report
            self._rejected_at_last_report = self.frames_rejected
            level, message = self._judge(now, new_rejects)
        return level, message, values

    def _judge(self, now: float, new_rejects: int) -> Tuple[int, str]:
        since_out = now - (self.last_out if self.last_out is not None else self.started)
        input_fresh = self.last_in is not None and now - self.last_in < self.stall_after
        if input_fresh and since_out > self.stall_after:
            return ERROR, "output stalled: no depth for %.1f s while camera frames arrive" % since_out
        if not input_fresh:
            waited = now - (self.last_in if self.last_in is not None else self.started)
            if waited > self.stall_after:
                return WARN, "no camera frames for %.1f s" % waited
        if new_rejects:
            return WARN, "bad input: %d frame(s) rejected since last report (%s)" % (
                new_rejects, ", ".join(sorted(self.rejected_kinds)))
        return OK, "depth at %.1f Hz from %.1f Hz input" % (self.output_rate.rate(now), self.input_rate.rate(now))


def _fmt(value: Optional[float]) -> str:
    return "nan" if value is None else "%.1f" % value
