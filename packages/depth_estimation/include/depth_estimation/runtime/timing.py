"""Stage timers and rolling statistics for latency diagnostics and benchmarks."""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Deque, Dict, Iterator, Optional

import numpy as np


class Rolling:
    """The last ``window`` values of one quantity, with percentiles."""

    def __init__(self, window: int = 100):
        self.values: Deque[float] = deque(maxlen=window)
        self.total = 0

    def add(self, value: float) -> None:
        self.values.append(float(value))
        self.total += 1

    def percentile(self, q: float) -> Optional[float]:
        return float(np.percentile(np.asarray(self.values), q)) if self.values else None


class StageTimer:
    """Wall-clock milliseconds per named stage: ``with timer.stage("infer"): ...``."""

    def __init__(self, window: int = 100):
        self.window = window
        self.stages: Dict[str, Rolling] = {}
        self._lock = threading.Lock()

    def record(self, name: str, ms: float) -> None:
        with self._lock:
            self.stages.setdefault(name, Rolling(self.window)).add(ms)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, (time.perf_counter() - start) * 1000.0)

    def percentile(self, name: str, q: float) -> Optional[float]:
        with self._lock:
            rolling = self.stages.get(name)
            return rolling.percentile(q) if rolling else None


class RateMeter:
    """Events per second over the last ``horizon`` seconds of a caller-supplied clock."""

    def __init__(self, horizon: float = 5.0):
        self.horizon = horizon
        self.times: Deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self.times.append(now)
            self._trim(now)

    def rate(self, now: float) -> float:
        with self._lock:
            self._trim(now)
            if len(self.times) < 2:
                return 0.0
            return (len(self.times) - 1) / max(now - self.times[0], 1e-9)

    def _trim(self, now: float) -> None:
        while self.times and (now - self.times[0] > self.horizon or self.times[0] > now):
            self.times.popleft()
