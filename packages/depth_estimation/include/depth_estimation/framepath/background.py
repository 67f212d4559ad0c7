"""The node's background threads without ROS: a periodic call that survives a clock jumping back,
and the watch on the ROS master's process id.

The ROS node passes rospy's sleep, shutdown flag and ``ROSTimeMovedBackwardsException``: rospy.Timer
dies at the first backwards jump of ROS time (a looped ``rosbag play --clock``, a restarted
simulator), taking the diagnostics and the run-time parameter checks with it.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Type


def every(period: float, callback: Callable[[], None], sleep: Callable[[float], None],
          stopped: Callable[[], bool], jumped: Type[BaseException], on_jump: Callable[[BaseException], None],
          on_error: Callable[[BaseException], None], name: str = "every") -> threading.Thread:
    """Call ``callback`` every ``period`` seconds of ``sleep``'s clock in a daemon thread until
    ``stopped()``. ``sleep`` raising ``jumped`` (the clock went back) calls ``on_jump`` and starts
    the period anew; any other exception of ``sleep`` ends the loop (a shutdown); an exception of
    ``callback`` goes to ``on_error`` and the calls go on."""
    def loop() -> None:
        while not stopped():
            try:
                sleep(period)
            except jumped as exc:
                on_jump(exc)
                continue
            except Exception:  # noqa: BLE001 - the clock's shutdown signal
                return
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - said by the caller, the calls go on
                on_error(exc)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread


def watch_restart(get_pid: Callable[[], int], stopped: Callable[[], bool], unreachable: Callable[[], None],
                  restarted: Callable[[int, int], None], poll: float = 1.0) -> None:
    """Ask ``get_pid()`` (the ROS master's process id) every ``poll`` s until ``stopped()``: an error
    calls ``unreachable()`` once per outage; another pid than the first calls ``restarted(pid, first)``
    and returns (the master restarted: the node's registrations are gone)."""
    first, away = None, False
    while not stopped():
        try:
            pid = get_pid()
        except Exception:  # noqa: BLE001 - down or unreachable: keep asking
            if not away:
                unreachable()
            away = True
            time.sleep(poll)
            continue
        away = False
        first = pid if first is None else first
        if pid != first:
            restarted(pid, first)
            return
        time.sleep(poll)
