"""duckietown-sdk's camera as the frame source of ``depth-live``: the only module that imports the SDK.

The SDK (``DB21M(name)`` / ``DB21J(name)``, ``simulated=True`` for the Duckiematrix) subscribes over
DTPS to ``[robot/]<name>/sensor/camera/front_center/jpeg``, where the robot's switchboard publishes
each frame as a CBOR ``duckietown_messages`` ``CompressedImage`` (``header``, ``format``, ``data``).
The SDK would decode the JPEG itself (PyTurboJPEG) and lose a bad frame inside its callback, so
:class:`SdkCamera` keeps the compressed bytes (the camera's ``_unpack`` step is replaced by one that
returns them): the frame path validates, decodes and counts every frame exactly as the ROS node does.

The SDK waits forever for a robot that is not there and goes silent when the stream stops, so
:func:`probe` checks the address first and ``depth-live`` keeps its own frame watchdog.
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable, Optional, Tuple

import cv2
import numpy as np

SIM_ROBOT = "map_0/vehicle_0"  # the Duckiematrix's first robot (the name duckietown-sdk's tests use)
CAMERA = "front_center"
ROBOT_TYPES = ("db21m", "db21j")
INSTALL_HINT = ("cannot load duckietown-sdk (it needs dtps-http, PyTurboJPEG and the system's "
                "libturbojpeg): `make setup`, or pip install duckietown-sdk dtps-http and "
                "apt-get install libturbojpeg0 (Ubuntu: libturbojpeg)")


class CameraError(RuntimeError):
    """The camera cannot be reached, or its stream stopped: one clear sentence for the user."""


def default_address(robot: str, simulated: bool) -> Tuple[str, int]:
    """(host, port) the SDK uses: ``<name>.local`` at the switchboard's port, or the Duckiematrix's."""
    generic = _sdk_module("duckietown.sdk.robots.duckiebot.generic")
    if simulated:
        return "127.0.0.1", int(generic.DEFAULT_DUCKIEMATRIX_PORT)
    return "%s.local" % robot, int(generic.DEFAULT_ROBOT_SWITCHBOARD_PORT)


def topic_path(robot: str, simulated: bool) -> str:
    return "/".join((["robot"] if simulated else []) + [robot, "sensor", "camera", CAMERA, "jpeg"])


def probe(host: str, port: int, timeout: float = 3.0) -> Optional[str]:
    """Why nothing answers at ``host``:``port`` (one sentence), or None when a server accepts."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return "cannot resolve %s (%s): is the robot on this network? pass --host with its IP" % (host, exc)
    except OSError as exc:
        return "nothing answers at %s:%d (%s)" % (host, port, exc.strerror or type(exc).__name__)


def _sdk_module(name: str) -> Any:
    import importlib

    try:  # optional and heavy (dtps, aiohttp, turbojpeg): only depth-live needs it
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or turbojpeg's OSError/RuntimeError without libturbojpeg
        raise CameraError("%s (%s: %s)" % (INSTALL_HINT, type(exc).__name__, exc)) from None


def _compressed(msg: Any) -> Any:
    """The switchboard's CompressedImage as (bytes, format), instead of the SDK's decoded BGR."""
    if isinstance(msg, dict) and "data" in msg:
        return bytes(msg["data"]), str(msg.get("format") or "jpeg")
    return msg


def frame_bytes(item: Any) -> Tuple[bytes, str]:
    """(compressed bytes, format) of what the camera delivered (a BGR array is encoded, lossless PNG)."""
    if isinstance(item, tuple):
        return item
    if isinstance(item, np.ndarray):  # an SDK whose camera cannot hand over the JPEG
        ok, buf = cv2.imencode(".png", item)
        return (buf.tobytes() if ok else b""), "png"
    return bytes(item or b""), ""


class SdkCamera:
    """One robot's (or the Duckiematrix's) camera through duckietown-sdk; ``on_frame(bytes, fmt)``."""

    def __init__(self, robot: str, simulated: bool = False, host: Optional[str] = None,
                 port: Optional[int] = None, robot_type: str = "db21m", open_timeout: float = 10.0):
        self.robot, self.simulated, self.robot_type = robot, simulated, robot_type
        default_host, default_port = default_address(robot, simulated)
        self.host, self.port = host or default_host, int(port or default_port)
        self.open_timeout = open_timeout
        self.camera: Any = None

    def describe(self) -> str:
        return "DTPS http://%s:%d/ %s" % (self.host, self.port, topic_path(self.robot, self.simulated))

    def diagnose(self) -> str:
        """Why frames do not come: the server is gone, or it answers but sends nothing on the topic."""
        problem = probe(self.host, self.port, timeout=1.0)
        if problem:
            return "the server is gone (%s)" % problem
        topic = topic_path(self.robot, self.simulated)
        return ("the server at %s:%d answers but sends no camera frames on %s (is the camera running, "
                "is the robot's name right?)" % (self.host, self.port, topic))

    def start(self, on_frame: Callable[[bytes, str], None]) -> None:
        problem = probe(self.host, self.port)
        if problem:
            where = "the Duckiematrix" if self.simulated else "robot %s's DTPS switchboard" % self.robot
            raise CameraError("cannot reach %s: %s" % (where, problem))
        for name in ("dtps", "dtps_http"):  # dtps sets DEBUG on its loggers
            logging.getLogger(name).setLevel(logging.WARNING)
        robots = _sdk_module("duckietown.sdk.robots.duckiebot")
        kind = getattr(robots, self.robot_type.upper())
        self.camera = _within(self.open_timeout, lambda: kind(self.robot, host=self.host, port=self.port,
                                                               simulated=self.simulated).camera,
                              "opening %s" % self.describe())
        self.camera._unpack = _compressed  # keep the JPEG: the frame path decodes and counts it

        def deliver(item: Any) -> None:
            data, fmt = frame_bytes(item)
            on_frame(data, fmt)

        self.camera.attach(deliver)
        self.camera.start()

    def stop(self) -> None:
        if self.camera is not None and self.camera.is_started:
            try:
                self.camera.stop()
            except Exception:  # noqa: BLE001 - a server already gone may refuse the unsubscribe
                pass


def _within(timeout: float, call: Callable[[], Any], what: str) -> Any:
    """``call()`` in a helper thread, or CameraError after ``timeout`` s (the SDK's calls have none)."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="sdk_open", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CameraError("%s did not finish in %.0f s" % (what, timeout))
    if "error" in box:
        raise CameraError("%s failed: %s: %s" % (what, type(box["error"]).__name__, box["error"]))
    return box["value"]
