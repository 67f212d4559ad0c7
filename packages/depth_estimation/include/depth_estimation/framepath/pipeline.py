"""The node's frame path without ROS: compressed frame -> depth -> colour image and its JPEG.

:class:`DepthPipeline` holds the steps (decode, network, colorize and encode) that
:class:`~.stream.FrameStream` runs in its stages (the node's decode | network | colorize+publish
threads, ``depth-live`` too); :class:`CameraInfoPairing` gives each frame the camera_info with its
own stamp (the subscriber stores, the output stage looks up); :mod:`.health` keeps the counts.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Optional, Tuple

import cv2
import numpy as np

from depth_estimation.framepath import frames
from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.framepath.health import NodeHealth
from depth_estimation.framepath.params import check_params
from depth_estimation.geometry.camera import camera_info_problem  # noqa: F401 - the node's policy, here too
from depth_estimation.runtime.estimator import DepthEstimator, Prepared
from depth_estimation.runtime.timing import StageTimer


@dataclass
class DepthResult:
    depth: np.ndarray  # float32 HxW, relative inverse depth
    colorized: Optional[np.ndarray]  # bgr8 HxWx3
    colorized_jpeg: Optional[bytes]


def pipeline_from_params(raw: Dict[str, Any]) -> "DepthPipeline":
    """The node's pipeline from its parameters (config/depth_node/default.yaml + overrides), checked
    by :func:`~depth_estimation.framepath.params.check_params` (ParameterError names each bad one)."""
    params = check_params(raw)
    estimator = DepthEstimator(model=params["model"], input_size=params["input_size"] or None,
                               backend=params["backend"], device=params["device"],
                               threads=params["threads"], half=params["half"],
                               engine_dir=params["engine_dir"] or None, workspace_mb=params["workspace_mb"],
                               tensorrt_fp16=params["tensorrt_fp16"])
    return DepthPipeline(estimator, colorizer_from_params(params), min_side=params["min_side"],
                         max_side=params["max_side"], jpeg_quality=params["jpeg_quality"],
                         max_aspect=params["max_aspect"], max_input_pixels=params["max_input_pixels"])


def start_pipeline(params: Dict[str, Any], window: int = 100) -> Tuple["DepthPipeline", NodeHealth]:
    """The node's pipeline from checked parameters, loaded and run once on a blank frame of
    ``expected_frame_size`` (a backend that cannot work fails here, at start, not on the first camera
    frame), with the health counters that describe it (``window``: frames kept for percentiles)."""
    pipeline = pipeline_from_params(params)
    estimator = pipeline.estimator.load()
    width, height = params["expected_frame_size"]
    estimator.warm_up(np.zeros((int(height), int(width), 3), np.uint8))  # with the TensorRT self-check
    info = {"model": estimator.name, "backend": estimator.backend,
            "backend_requested": estimator.requested_backend, "device": str(estimator.device),
            "input_size": str(estimator.input_size),
            "weights": "RANDOM (untrained)" if estimator.spec.untrained else "trained"}
    health = NodeHealth(estimator.timer, info, stall_after=float(params["stall_after"]), window=window)
    return pipeline, health


def colorizer_from_params(params: Dict[str, Any]) -> Colorizer:
    """The colorizer of checked parameters (colormap, color_range, color_percentiles, color_vmin/vmax)."""
    return Colorizer(colormap=params["colormap"], range_mode=params["color_range"],
                     percentiles=params["color_percentiles"], vmin=params["color_vmin"],
                     vmax=params["color_vmax"])


class DepthPipeline:
    """Compressed frame bytes -> depth (+ colour image and its JPEG). Raises frames.RejectedFrame.

    Besides the frame checks of :func:`frames.decode` (format, integrity, sides, and ``max_aspect``:
    one 4096x16 frame would otherwise become a 308x78848 input and freeze the node), a frame whose
    network input would exceed ``max_input_pixels`` is rejected (kind ``input_too_large``) before
    the network sees it.
    """

    def __init__(self, estimator: DepthEstimator, colorizer: Optional[Colorizer] = None,
                 min_side: int = 16, max_side: int = 4096, jpeg_quality: int = 90, max_aspect: float = 4.0,
                 max_input_pixels: int = 1000000):
        self.estimator, self.colorizer = estimator, colorizer
        self.min_side, self.max_side, self.jpeg_quality = min_side, max_side, jpeg_quality
        self.max_aspect, self.max_input_pixels = float(max_aspect), int(max_input_pixels)
        self.timer: StageTimer = estimator.timer

    def configure(self, params: Dict[str, Any]) -> None:
        """Take new run-time parameters (checked; colour settings, jpeg_quality) from the next frame on."""
        self.colorizer = colorizer_from_params(params)
        self.jpeg_quality = int(params["jpeg_quality"])

    def check_size(self, height: int, width: int) -> None:
        """RejectedFrame when a ``height`` x ``width`` frame makes too large a network input."""
        in_h, in_w = self.estimator.input_hw(height, width)
        if in_h * in_w > self.max_input_pixels:
            raise frames.RejectedFrame("input_too_large", "%dx%d frame -> %dx%d network input, over %d pixels"
                                       % (width, height, in_w, in_h, self.max_input_pixels))

    def process(self, data: bytes, fmt: str = "", colorized: bool = True, jpeg: bool = True) -> DepthResult:
        """The whole frame path in the caller's thread (:class:`~.stream.FrameStream` runs the same
        three steps, :meth:`prepare`, the network and :meth:`finish`, in threads of their own)."""
        prepared = self.prepare(data, fmt)
        return self.finish(prepared, self.infer(prepared), colorized, jpeg)

    def infer(self, prepared: Prepared) -> np.ndarray:
        """The network on a prepared frame (failures tagged ``infer``)."""
        with frames.failing_as("infer"):
            return self.estimator.run(prepared)

    def prepare(self, data: bytes, fmt: str = "") -> Prepared:
        """Compressed frame bytes -> the network's input (RejectedFrame for bad frames)."""
        with frames.failing_as("decode"):
            with self.timer.stage("decode"):
                bgr = frames.decode(data, fmt, self.min_side, self.max_side, self.max_aspect)
                self.check_size(*bgr.shape[:2])
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return self.estimator.prepare(rgb)

    def finish(self, prepared: Prepared, prediction: np.ndarray, colorized: bool = True,
               jpeg: bool = True) -> DepthResult:
        """The network's prediction -> depth at the frame's size, its colour image and JPEG."""
        with frames.failing_as("postprocess"):
            depth = self.estimator.finish(prepared, prediction)
        color = color_jpeg = None
        colorizer, quality = self.colorizer, self.jpeg_quality  # configure() may swap them meanwhile
        if colorizer is not None and (colorized or jpeg):
            with frames.failing_as("colorize"), self.timer.stage("colorize"):
                color = colorizer(depth)
            if jpeg:
                with frames.failing_as("encode"), self.timer.stage("encode"):
                    color_jpeg = frames.encode_jpeg(color, quality)
        return DepthResult(depth, color, color_jpeg)


class CameraInfoPairing:
    """The camera_info that belongs to a frame, among the last ``keep`` received (in arrival order):
    the newest one with the frame's stamp (the Duckiebot camera publishes both with the same stamp;
    a looped bag or a restarted simulator repeats stamps), else the one stamped last before the
    frame; an unstamped frame (stamp 0) takes the newest one received. The oldest received is the
    one forgotten, whatever its stamp, so stamps that go backwards or repeat lose nothing. None when
    nothing fits (the caller counts it). Thread-safe (the subscriber stores, the worker looks up)."""

    def __init__(self, keep: int = 60):
        self._infos: Deque[Tuple[int, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    @property
    def received(self) -> bool:
        return bool(self._infos)

    def store(self, stamp_ns: int, info: Any) -> None:
        with self._lock:
            self._infos.append((int(stamp_ns), info))

    def find(self, stamp_ns: int) -> Optional[Any]:
        with self._lock:
            infos = list(self._infos)
        if not infos:
            return None
        if stamp_ns == 0:
            return infos[-1][1]
        best: Optional[Tuple[int, Any]] = None
        for stamp, info in reversed(infos):  # newest first: of equal stamps the newest wins
            if stamp == stamp_ns:
                return info
            if stamp < stamp_ns and (best is None or stamp > best[0]):
                best = (stamp, info)
        return best[1] if best is not None else None
