"""Where ``depth-live`` shows its frames: an OpenCV window (when a display exists) and/or a folder.

The folder (``--out DIR``) gets ``live.avi`` (camera | depth side by side, MJPG, renamed into place
when the run ends), with ``--save-frames`` every pair as ``frames/NNNNNN.jpg``, and ``report.json``;
every file is written atomically (:mod:`depth_estimation.io.atomic`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Dict, Optional

import cv2
import numpy as np

from depth_estimation.framepath import frames
from depth_estimation.io.atomic import atomic_path, write_bytes, write_json

WINDOW = "depth-live: camera | depth (q or Esc to quit)"
VIDEO, REPORT, FRAMES = "live.avi", "report.json", "frames"


def display_available() -> bool:
    """A display to open a window on, and an OpenCV built with highgui (opencv-python-headless is not)."""
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not display:
        return False
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        return False


def side_by_side(camera_bgr: np.ndarray, depth_bgr: np.ndarray) -> np.ndarray:
    """camera | depth, the depth image scaled to the camera frame's height."""
    height = camera_bgr.shape[0]
    if depth_bgr.shape[0] != height:
        width = max(1, round(depth_bgr.shape[1] * height / depth_bgr.shape[0]))
        depth_bgr = cv2.resize(depth_bgr, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.hstack([camera_bgr, depth_bgr])


class Window:
    """The OpenCV window; ``show`` returns False once the user asked to quit (q, Esc, window closed)."""

    def __init__(self):
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)

    def show(self, image: Optional[np.ndarray]) -> bool:
        if image is not None:
            cv2.imshow(WINDOW, image)
        key = cv2.waitKey(1) & 0xFF
        try:
            closed = cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            closed = True
        return key not in (ord("q"), 27) and not closed

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(WINDOW)


class Recorder:
    """``live.avi`` (+ ``frames/``) in ``out_dir``; the video appears whole when ``close`` runs."""

    def __init__(self, out_dir: str, fps: float = 15.0, save_frames: bool = False, jpeg_quality: int = 90):
        self.out_dir = os.path.abspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self.fps, self.save_frames, self.jpeg_quality = float(fps), save_frames, jpeg_quality
        self.video_path = os.path.join(self.out_dir, VIDEO)
        self.report_path = os.path.join(self.out_dir, REPORT)
        self.written = 0
        self._stack = contextlib.ExitStack()
        self._writer: Any = None
        self._size = None

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            tmp = self._stack.enter_context(atomic_path(self.video_path))
            self._size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"MJPG"), self.fps, self._size)
            if not self._writer.isOpened():
                raise RuntimeError("OpenCV cannot write an MJPG video to %s" % tmp)
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.written += 1
        if self.save_frames:
            write_bytes(os.path.join(self.out_dir, FRAMES, "%06d.jpg" % self.written),
                        frames.encode_jpeg(image, self.jpeg_quality))

    def close(self) -> None:
        """Finish the video (renamed onto ``live.avi``); a run with no depth frame leaves none."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._stack.close()

    def files(self) -> Dict[str, Optional[str]]:
        return {"video": self.video_path if self.written else None,
                "frames": os.path.join(self.out_dir, FRAMES) if self.save_frames and self.written else None,
                "report": self.report_path}

    def write_report(self, report: Dict[str, Any]) -> None:
        write_json(self.report_path, report)
