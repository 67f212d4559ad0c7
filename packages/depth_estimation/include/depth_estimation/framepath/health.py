"""The node's health for diagnostics: frame accounting, rates, latencies and the level to report.

Every camera frame ends in exactly one of: published (``frames_out``), replaced before the decode
stage took it or replaced between two stages of the stream (``frames_dropped``, by stage in
``frames_dropped_by_stage``), refused as bad input (``frames_rejected``, by kind), failed
(``inference_errors``, all stages; by the stage that raised in ``errors_by_stage``: decode, infer,
postprocess, colorize, encode, publish), not processed because the node was switched off or shut down
(``frames_paused``), skipped to keep ``~process_frequency`` (``frames_throttled``) or because no
output had a subscriber (``frames_idle``, the report says ``idle: no subscribers``); so
``frames_in = out + dropped + rejected + errors + paused + throttled + idle`` (+ frames in flight).
``frames_missed`` counts gaps in the camera's ``header.seq`` (lost before the node saw them);
camera_info problems are counted apart (``camera_info_mismatches``; ``camera_info_unpaired``: frames
for which no camera_info of theirs had arrived although the camera publishes them).
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Dict, Optional, Tuple

from depth_estimation.framepath.gate import IDLE, PAUSED, THROTTLED
from depth_estimation.runtime.timing import RateMeter, Rolling, StageTimer

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


def error_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one line for logs and diagnostics: ``Type: message``, white space folded."""
    return "%s: %s" % (type(exc).__name__, " ".join(str(exc).split())[:limit])


class NodeHealth:
    """Counters, rates and latencies of a depth node, summarised for diagnostics.

    Times are seconds of the caller's clock (ROS time, so it works under /use_sim_time).
    """

    def __init__(self, timer: StageTimer, info: Dict[str, str], stall_after: float = 5.0, window: int = 100):
        self.timer, self.info, self.stall_after = timer, dict(info), stall_after
        self.frames_in = self.frames_out = self.frames_dropped = self.frames_rejected = 0
        self.frames_missed = 0  # gaps in the camera's header.seq: lost before the node saw them
        self.inference_errors = self.camera_info_mismatches = self.camera_info_unpaired = 0
        self.frames_paused = self.frames_throttled = self.frames_idle = 0
        self.idle = False  # the last frame found no subscriber to any output: no output is expected
        self._bad_since_out = Counter()  # frames rejected / failed since the last output, by kind
        self.paused = False  # switched off (~switch): no output is expected
        self.min_period = 0.0  # 1 / ~process_frequency: output is expected at most this often
        self.last_error = self.last_camera_info_problem = ""
        self._last_seq: Optional[int] = None
        self.rejected_kinds: Counter = Counter()
        self.dropped_stages: Counter = Counter()  # drops between stages, by the stage the frame had left
        self.error_stages: Counter = Counter()  # failures, by the stage that raised
        self.input_rate, self.output_rate = RateMeter(), RateMeter()
        self.end_to_end = Rolling(window)
        self.last_in: Optional[float] = None
        self.last_out: Optional[float] = None
        self.started: Optional[float] = None
        self._reported: Counter = Counter()  # counts at the last report: new events make one WARN/ERROR
        self._lock = threading.Lock()

    def frame_in(self, now: float, dropped_previous: bool, seq: Optional[int] = None) -> None:
        """A camera frame arrived and was queued; ``dropped_previous``: it replaced one never processed."""
        with self._lock:
            self._arrived(now, seq)
            if self.idle:  # a subscriber came: the stall clock starts now
                self.idle, self.last_out = False, now
            self.frames_dropped += int(dropped_previous)
            self.dropped_stages["queue"] += int(dropped_previous)

    def frame_dropped(self, stage: str) -> None:
        """A frame replaced between two stages of the stream (the next stage was busy): counted as
        dropped, and by the stage that had finished it (``frames_dropped_by_stage``)."""
        with self._lock:
            self.frames_dropped += 1
            self.dropped_stages[stage] += 1

    def frame_skipped(self, now: float, reason: str, seq: Optional[int] = None) -> None:
        """A camera frame arrived and was not queued: ``reason`` is gate.PAUSED, gate.THROTTLED or
        gate.IDLE (no output has a subscriber)."""
        with self._lock:
            self._arrived(now, seq)
            if reason == IDLE:
                self.frames_idle += 1
                self.idle = True
            elif reason == PAUSED:
                self.frames_paused += 1
            elif reason == THROTTLED:
                self.frames_throttled += 1
            else:
                raise ValueError("unknown reason %r" % (reason,))

    def frame_withheld(self) -> None:
        """A queued frame not published because the node was switched off or shut down meanwhile (counted
        as paused)."""
        with self._lock:
            self.frames_paused += 1

    def set_paused(self, paused: bool, now: float) -> None:
        """Switched off or on; after switching on the stall clocks start anew."""
        with self._lock:
            if self.paused and not paused:
                self.last_out = self.last_in = now
            self.paused = paused

    def _arrived(self, now: float, seq: Optional[int]) -> None:
        self.frames_in += 1
        if seq is not None and self._last_seq is not None and 0 < seq - self._last_seq <= 10000:
            self.frames_missed += seq - self._last_seq - 1  # a restart or reorder is no gap
        self._last_seq = seq if seq is not None else self._last_seq
        self.last_in = now
        self.input_rate.tick(now)

    def frame_rejected(self, kind: str) -> None:
        with self._lock:
            self.frames_rejected += 1
            self.rejected_kinds[kind] += 1
            self._bad_since_out["rejected as %s" % kind] += 1

    def frame_failed(self, stage: str, message: str) -> None:
        """A frame whose processing raised something other than a rejection in ``stage`` (decode, infer,
        postprocess, colorize, encode or publish); it is not published (or not completely)."""
        with self._lock:
            self.inference_errors += 1
            self.error_stages[stage] += 1
            self.last_error = "%s: %s" % (stage, " ".join(str(message).split())[:300])
            self._bad_since_out["failed in %s" % stage] += 1

    def camera_info_mismatch(self, problem: str) -> None:
        """A frame published without camera_info because its camera_info does not describe it."""
        with self._lock:
            self.camera_info_mismatches += 1
            self.last_camera_info_problem = problem

    def camera_info_missing(self) -> None:
        """A frame for which no camera_info could be paired (published without one)."""
        with self._lock:
            self.camera_info_unpaired += 1

    def frame_out(self, now: float, stamp: float) -> None:
        with self._lock:
            self.frames_out += 1
            self.last_out = now
            self._bad_since_out.clear()
            self.output_rate.tick(now)
            self.end_to_end.add((now - stamp) * 1000.0)

    def report(self, now: float) -> Tuple[int, str, Dict[str, str]]:
        """(level, message, key/values) for a DiagnosticStatus."""
        if self.started is None:
            self.started = now
        with self._lock:
            values = dict(self.info)
            values.update(self._timings())
            values.update(self._counts(now))
            current = Counter({"rejected": self.frames_rejected, "errors": self.inference_errors,
                               "camera_info": self.camera_info_mismatches,
                               "unpaired": self.camera_info_unpaired})
            new, self._reported = current - self._reported, current
            level, message = self._judge(now, new)
        return level, message, values

    def _timings(self) -> Dict[str, str]:
        values = {name: _fmt(self.timer.percentile(stage, q)) for name, stage, q in (
            ("inference_ms_p50", "infer", 50), ("inference_ms_p95", "infer", 95),
            ("decode_ms_p50", "decode", 50), ("preprocess_ms_p50", "preprocess", 50),
            ("postprocess_ms_p50", "postprocess", 50), ("colorize_ms_p50", "colorize", 50),
            ("encode_ms_p50", "encode", 50))}
        values["end_to_end_ms_p50"] = _fmt(self.end_to_end.percentile(50))
        values["end_to_end_ms_p95"] = _fmt(self.end_to_end.percentile(95))
        return values

    def _counts(self, now: float) -> Dict[str, str]:
        return {
            "input_hz": "%.2f" % self.input_rate.rate(now), "output_hz": "%.2f" % self.output_rate.rate(now),
            "frames_in": str(self.frames_in), "frames_out": str(self.frames_out),
            "frames_dropped": str(self.frames_dropped), "frames_rejected": str(self.frames_rejected),
            "frames_missed": str(self.frames_missed), "inference_errors": str(self.inference_errors),
            "frames_paused": str(self.frames_paused), "frames_throttled": str(self.frames_throttled),
            "frames_idle": str(self.frames_idle),
            "paused": "true" if self.paused else "false",
            "last_error": self.last_error, "camera_info_mismatches": str(self.camera_info_mismatches),
            "camera_info_unpaired": str(self.camera_info_unpaired),
            "rejected_kinds": _by_kind(self.rejected_kinds),
            "frames_dropped_by_stage": _by_kind(self.dropped_stages),
            "errors_by_stage": _by_kind(self.error_stages),
        }

    def _judge(self, now: float, new: Counter) -> Tuple[int, str]:
        since_out = now - (self.last_out if self.last_out is not None else self.started)
        input_fresh = self.last_in is not None and now - self.last_in < self.stall_after
        if new["errors"]:
            return ERROR, "processing failed on %d frame(s) since last report (so far by stage: %s); " \
                "last: %s" % (new["errors"], _by_kind(self.error_stages), self.last_error)
        if self.paused:
            return OK, "paused (~switch off): %d frame(s) not processed" % self.frames_paused
        if self.idle:
            return OK, "idle: no subscribers (%d frame(s) not processed)" % self.frames_idle
        if input_fresh and since_out > self.stall_after + self.min_period:
            bad = self._bad_since_out
            if bad:  # the cause first: the frames since the last output were refused or failed
                return ERROR, "output stalled: no depth for %.1f s, the frames since were %s" % (
                    since_out, ", ".join("%s (%d)" % kv for kv in sorted(bad.items())))
            return ERROR, "output stalled: no depth for %.1f s while camera frames arrive" % since_out
        if not input_fresh:
            waited = now - (self.last_in if self.last_in is not None else self.started)
            if waited > self.stall_after:
                return WARN, "no camera frames for %.1f s" % waited
        if new["rejected"]:
            return WARN, "bad input: %d frame(s) rejected since last report (%s)" % (
                new["rejected"], ", ".join(sorted(self.rejected_kinds)))
        if new["camera_info"]:
            return WARN, "depth published without camera_info: %s" % self.last_camera_info_problem
        if new["unpaired"]:
            return WARN, "depth published without camera_info: %d frame(s) since last report had none of " \
                "theirs (no camera_info with their stamp or before it)" % new["unpaired"]
        return OK, "depth at %.1f Hz from %.1f Hz input" % (self.output_rate.rate(now),
                                                             self.input_rate.rate(now))


def _by_kind(counts: Counter) -> str:
    """``a=1,b=2`` (sorted by name; zeros left out)."""
    return ",".join("%s=%d" % kv for kv in sorted(counts.items()) if kv[1])


def _fmt(value: Optional[float]) -> str:
    return "nan" if value is None else "%.1f" % value
