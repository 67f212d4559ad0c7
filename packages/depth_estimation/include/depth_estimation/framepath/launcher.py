"""What the node shares with its console and its launcher (nothing here imports ROS).

* :func:`forward_logs`: the library logs through Python ``logging`` (logger ``depth_estimation``):
  engine-build progress ("still building ...", "engine built in N s"), cache and export messages.
  Under ROS, rospy sends those to a log file only (rosgraph's ``python_logging.conf``), which in a
  Duckietown container lies in the container's own temporary ROS_HOME and goes with ``--rm``; the
  node forwards them, after ``init_node``, to rospy's log functions: the console and ``/rosout``.
* :func:`exit_now`: the node leaves with it; ``roslaunch`` exits 0 when a required node dies,
  whatever its exit code, so the code also goes to ``$DEPTH_NODE_EXIT_FILE`` (set by
  ``launchers/depth-estimation.sh``, which restarts the node on code 3, the ROS master restarted,
  and ends with the code otherwise).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Dict

from depth_estimation.io.atomic import atomic_file

LIBRARY_LOGGER = "depth_estimation"
EXIT_FILE_ENV = "DEPTH_NODE_EXIT_FILE"
# rospy's log functions per level (``forward_logs(rospy)``)
ROSPY_LOG = {logging.DEBUG: "logdebug", logging.INFO: "loginfo", logging.WARNING: "logwarn",
             logging.ERROR: "logerr"}


class ForwardHandler(logging.Handler):
    """Each record to the emitter of the highest level at or below the record's (``{levelno: emit}``;
    ``emit(text)`` takes the formatted message)."""

    def __init__(self, emitters: Dict[int, Callable[[str], Any]], level: int = logging.INFO):
        super().__init__(level)
        self.emitters = sorted(emitters.items(), key=lambda item: item[0], reverse=True)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            emit = next((e for level, e in self.emitters if record.levelno >= level), self.emitters[-1][1])
            emit(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)


def forward_logs(rospy: Any, level: int = logging.INFO, name: str = LIBRARY_LOGGER) -> ForwardHandler:
    """Forward the records of logger ``name`` at ``level`` and above to ``rospy``'s log functions
    (any object with ``logdebug``, ``loginfo``, ``logwarn`` and ``logerr``), replacing an earlier
    forwarding; the handler."""
    logger = logging.getLogger(name)
    for old in [h for h in logger.handlers if isinstance(h, ForwardHandler)]:
        logger.removeHandler(old)
    handler = ForwardHandler({lv: getattr(rospy, fn) for lv, fn in ROSPY_LOG.items()}, level)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    return handler


def record_exit_code(code: int) -> None:
    """Write ``code`` to ``$DEPTH_NODE_EXIT_FILE`` (atomically) when that is set."""
    path = os.environ.get(EXIT_FILE_ENV)
    if not path:
        return
    try:
        with atomic_file(path) as f:
            f.write("%d\n" % code)
    except OSError as exc:
        print("depth_node: cannot write its exit code to %s: %s" % (path, exc), file=sys.stderr)


def exit_now(code: int) -> None:
    """Leave at once with ``code`` (recorded first, :func:`record_exit_code`): no C++ destructors
    racing a worker thread still inside the model (an inference in flight at SIGINT would otherwise
    abort the process with 'terminate called ...')."""
    record_exit_code(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
