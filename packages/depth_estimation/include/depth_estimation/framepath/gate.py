"""Which camera frames the node works on: none while it is switched off, at most ``frequency`` per second.

Duckietown's finite-state machine pauses a node through its ``~switch`` service; perception nodes
throttle themselves with ``~process_frequency``. :class:`FrameGate` decides for each arriving frame
before it is queued, so a paused or throttled frame costs no decoding and no inference; the caller
counts the skipped ones (``frames_paused``, ``frames_throttled``) apart from the frames dropped
because the model was busy. Nothing here needs ROS.
"""
from __future__ import annotations

import threading
from typing import Optional

PAUSED, THROTTLED = "paused", "throttled"
IDLE = "idle"  # the node's decision, not the gate's: no output has a subscriber, so no inference


class FrameGate:
    """Admits frames by their camera time (integer nanoseconds): ``admit`` returns None (process it),
    PAUSED or THROTTLED. Two admitted frames are never closer than ``1 / frequency`` (0 = no limit)
    less a quarter of the camera's own period (the last gap between two arriving frames), so a
    10 Hz limit on a 30 Hz camera takes every third frame although three camera periods come a
    nanosecond short of 0.1 s; a clock that goes back (a replayed bag, a restarted camera) starts
    the spacing anew. Thread-safe."""

    def __init__(self, frequency: float = 0.0):
        self._lock = threading.Lock()
        self.active = True
        self.frequency = float(frequency)
        self._last: Optional[int] = None  # the last admitted frame
        self._previous: Optional[int] = None  # the last arriving frame
        self._camera_ns = 0  # the camera's period, from the last positive gap between arriving frames

    @property
    def period(self) -> float:
        """The least time between two admitted frames, in seconds (0 = no limit)."""
        return 1.0 / self.frequency if self.frequency > 0 else 0.0

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.frequency)) if self.frequency > 0 else 0

    def set_frequency(self, frequency: float) -> None:
        with self._lock:
            self.frequency = float(frequency)

    def pause(self) -> None:
        with self._lock:
            self.active = False

    def resume(self) -> None:
        """Switched on again: the next frame is admitted whatever the spacing."""
        with self._lock:
            self.active, self._last = True, None

    def admit(self, stamp_ns: int) -> Optional[str]:
        stamp_ns = int(stamp_ns)
        with self._lock:
            if not self.active:
                return PAUSED
            previous, self._previous = self._previous, stamp_ns
            if previous is not None and stamp_ns > previous:
                self._camera_ns = stamp_ns - previous
            if self._last is not None and stamp_ns < self._last:
                self._last = None
            if self._last is not None and stamp_ns - self._last < self.period_ns - self._camera_ns // 4:
                return THROTTLED
            self._last = stamp_ns
            return None
