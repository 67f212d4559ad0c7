"""An OpenGL display for Duckietown's simulator: the one in ``DISPLAY`` when there is one, else a
private virtual X server (Debian's ``Xvfb``, rendering with Mesa) started here and stopped at exit.

The simulator (``gym_duckietown``, through pyglet) needs an X display with GLX even to render
off-screen; a machine without one (a CI runner, a container, an ssh session) gets ``Xvfb`` on a
free display number (``-displayfd``: the server picks it, no race with other users). A missing
``Xvfb`` or simulator is one :class:`SimUnavailable` line naming what to install.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import select
import shutil
import subprocess
from typing import Optional

APT_PACKAGES = "xvfb libgl1-mesa-dri"  # Debian packages: the virtual X server and Mesa's GL drivers
PIP_PACKAGES = "duckietown-gym-daffy==6.1.34 'pyglet<1.6'"
SCREEN = "1024x768x24"
START_TIMEOUT_S = 20.0
QUIET_LOGGERS = ("gym-duckietown", "duckietown_world", "commons", "zuper_commons")


class SimUnavailable(RuntimeError):
    """The simulator cannot run here: one line saying what to install."""


_server: Optional[subprocess.Popen] = None


def _stop() -> None:
    global _server
    if _server is not None and _server.poll() is None:
        _server.terminate()
        try:
            _server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _server.kill()
    _server = None


def _display_works(display: str) -> bool:
    """True when ``display`` (":N" or "host:N") names a local X socket that exists, or a remote one."""
    host, _sep, rest = display.partition(":")
    if host not in ("", "unix"):
        return True  # a remote display (ssh -X): trust it
    number = rest.split(".")[0]
    return number.isdigit() and os.path.exists("/tmp/.X11-unix/X%s" % number)


def ensure_display(force_virtual: bool = False) -> str:
    """The X display the simulator will use (sets ``DISPLAY``): the current one when it works, else a
    private ``Xvfb`` started now. :class:`SimUnavailable` when there is none and ``Xvfb`` is missing."""
    global _server
    current = os.environ.get("DISPLAY", "")
    if _server is not None and _server.poll() is None:
        return current
    if current and not force_virtual and _display_works(current):
        return current
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SimUnavailable("no X display and no Xvfb to start one: install Debian's %s "
                             "(apt-get install %s)" % (APT_PACKAGES, APT_PACKAGES))
    read_fd, write_fd = os.pipe()
    try:
        _server = subprocess.Popen([xvfb, "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten",
                                    "tcp"],
                                   pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        write_fd = -1
        ready, _w, _x = select.select([read_fd], [], [], START_TIMEOUT_S)
        number = os.read(read_fd, 64).decode().strip() if ready else ""
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if not number.isdigit():
        _stop()
        raise SimUnavailable("Xvfb did not start within %.0f s: check Debian's %s (apt-get install %s)"
                             % (START_TIMEOUT_S, APT_PACKAGES, APT_PACKAGES))
    atexit.register(_stop)
    os.environ["DISPLAY"] = ":%s" % number
    return os.environ["DISPLAY"]


def import_simulator():
    """``gym_duckietown.simulator`` (after :func:`ensure_display`), or :class:`SimUnavailable` naming
    the packages when it or its OpenGL cannot be loaded."""
    try:
        # it prints pyglet's options, GL details and a Gym notice on import
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from gym_duckietown import simulator  # optional: only depth-sim2bag renders
    except ImportError as exc:
        raise SimUnavailable("the Duckietown simulator is not installed (%s): pip install %s"
                             % (exc, PIP_PACKAGES)) from None
    except Exception as exc:  # pyglet raises its own errors when there is no GL
        raise SimUnavailable("the Duckietown simulator cannot open OpenGL (%s: %s): install Debian's %s"
                             % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                                APT_PACKAGES)) from None
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return simulator
