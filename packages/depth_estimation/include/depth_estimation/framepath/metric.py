"""The node's metric outputs: relative depth + camera_info + the robot's calibration -> metres.

:class:`MetricOutputs` is built from the node's checked parameters (``metric`` true): it reads the
robot's extrinsic calibration once at start (``extrinsics_file``, by default Duckietown's
``/data/config/calibrations/camera_extrinsic/<veh>.yaml``; when that robot file is missing it falls
back to the package's default with a warning; a named file that is missing, a malformed one or one
that puts the ground behind or above the camera stops the node with one line naming it; a pose or
lens unlikely on a DB21 is a warning: :mod:`depth_estimation.geometry.plausibility`), and per frame,
with that frame's camera_info, aligns the network's relative disparity to the ground plane
(:class:`~depth_estimation.geometry.ground.MetricAligner`) and reads the laser scan, the obstacle
distance ahead and a decimated point cloud off the metric depth
(:mod:`depth_estimation.geometry.obstacles`), and the virtual stop line for Duckietown's lane controller
(:mod:`depth_estimation.framepath.stop_line`). While the fit is not confident it holds the last
estimate for ``metric_hold`` seconds, then publishes nothing metric (state NONE) rather than wrong
metres. Its diagnostics (``metric_state``, ``metric_scale``, ``metric_shift``, ``metric_inliers``,
``ground_rmse``) and its warning join the node's. Nothing here needs ROS.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from depth_estimation.framepath.tof_check import TofCheck, TofComparison
from depth_estimation.framepath.stop_line import StopLine, virtual_stop_line
from depth_estimation.geometry import obstacles
from depth_estimation.geometry.calibration import (DEFAULT_EXTRINSICS, Extrinsics, ground_plane,
                                                   load_extrinsics)
from depth_estimation.geometry.camera import (FrameRays, Intrinsics, camera_info_problem,
                                              intrinsics_from_camera_info, read_intrinsics)
from depth_estimation.geometry.files import CalibrationError
from depth_estimation.geometry.ground import FitOptions, MetricAligner, MetricFrame
from depth_estimation.geometry.plane import GroundPlane
from depth_estimation.geometry.rectify import DepthRectifier, RectifiedCamera
from depth_estimation.geometry.plausibility import calibration_values, check_intrinsics, check_pose
from depth_estimation.geometry.tof import TofPose

CALIBRATIONS = "/data/config/calibrations"  # where a Duckiebot keeps its calibrations
NONE_WARN_AFTER = 2.0  # seconds in state NONE before the node's diagnostics say WARN


@dataclass(frozen=True)
class MetricOptions:
    """What :class:`MetricOutputs` needs, built once: :meth:`from_params` for the node (its defaults are
    config/depth_node/default.yaml's, so this class has none). ``extrinsics_file`` "" is the robot's own
    Duckietown file; ``max_range_m`` is also the scan's range_max."""
    extrinsics_file: str
    time_constant_s: float
    hold_s: float
    max_range_m: float
    fit: FitOptions
    obstacle_min_height_m: float
    obstacle_max_height_m: float
    obstacle_max_range_m: float
    corridor_width_m: float
    scan_bins: int
    scan_fov_deg: float
    points: bool
    points_step: int
    stop_line_offset_m: float
    tof_pose: TofPose = TofPose()
    tof_time_constant_s: float = 1.0
    tof_tolerance: float = 0.2

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "MetricOptions":
        """The options of the depth node's checked parameters (the one place that reads their names)."""
        p = params
        return cls(extrinsics_file=p["extrinsics_file"], time_constant_s=p["metric_time_constant"],
                   hold_s=p["metric_hold"], max_range_m=p["metric_max_range"],
                   fit=FitOptions(min_inlier_share=p["metric_min_inlier_share"]),
                   obstacle_min_height_m=p["obstacle_min_height"],
                   obstacle_max_height_m=p["obstacle_max_height"],
                   obstacle_max_range_m=p["obstacle_max_range"], corridor_width_m=p["corridor_width"],
                   scan_bins=p["scan_bins"], scan_fov_deg=p["scan_fov_deg"], points=p["points"],
                   points_step=p["points_step"], tof_pose=TofPose.from_list(p["tof_pose"]),
                   tof_time_constant_s=p["tof_time_constant"], tof_tolerance=p["tof_tolerance"],
                   stop_line_offset_m=p["virtual_stop_line_offset"])


def extrinsics_path(options: MetricOptions, veh: str) -> str:
    """``extrinsics_file``, or the robot's own Duckietown file when it is empty."""
    own = os.path.join(CALIBRATIONS, "camera_extrinsic", "%s.yaml" % (veh or "default"))
    return options.extrinsics_file or own


def own_intrinsics(veh: str, folder: str = CALIBRATIONS) -> Optional[Intrinsics]:
    """The robot's own intrinsic calibration (Duckietown's ``camera_intrinsic/<veh>.yaml``), to check
    the extrinsics against at start; None when it has none (then the first camera_info checks them)."""
    own = os.path.join(folder, "camera_intrinsic", "%s.yaml" % veh)
    return read_intrinsics(own) if veh and os.path.isfile(own) else None


class MetricProducts(NamedTuple):
    frame: MetricFrame  # depth_m None in state NONE
    intrinsics: Intrinsics
    plane: GroundPlane
    scan: Optional[obstacles.Scan]
    distance: float  # metres ahead to the closest obstacle in the corridor, inf when none, nan in NONE
    points: Optional[np.ndarray]  # N x 3 float32 in the camera's optical frame
    tof: Optional[TofComparison] = None  # the time-of-flight cross-check of this frame, when it made one
    stop_line: Optional[StopLine] = None  # framepath.stop_line: None unless the state is OK or HOLD


class MetricOutputs:
    """Per frame: metric depth, scan, obstacle distance and points (see the module docstring)."""

    def __init__(self, options: MetricOptions, veh: str = "",
                 warn: Optional[Callable[[str, str], None]] = None, calibrations: str = CALIBRATIONS):
        if not isinstance(options, MetricOptions):
            raise TypeError("MetricOutputs needs MetricOptions (from_params for the node's parameters)")
        self.options = options
        self.path = extrinsics_path(options, veh)
        if options.extrinsics_file and not os.path.isfile(os.path.expanduser(self.path)):
            raise CalibrationError("%s: no such file (~extrinsics_file); only the robot's own default path "
                                   "falls back to a generic pose" % self.path)
        self.extrinsics, warning = load_extrinsics(self.path, DEFAULT_EXTRINSICS)  # CalibrationError
        self.warnings: List[str] = [warning] if warning else []
        self.source = self.extrinsics.path or self.path
        self.values: Dict[str, str] = {}
        self.warn = warn
        self.tof = TofCheck(options.tof_pose, options.tof_time_constant_s, options.tof_tolerance)
        self._camera: Tuple[Any, Optional[MetricAligner], Optional[FrameRays]] = (None, None, None)
        self._rectifier: Optional[DepthRectifier] = None
        self._rejected: Tuple[Any, str] = (None, "")
        self._said: set = set()
        intrinsics = own_intrinsics(veh, calibrations)
        if intrinsics is not None:  # a plane behind the robot's camera fails now, not on the first frame
            own = os.path.join(calibrations, "camera_intrinsic", "%s.yaml" % veh)
            self._aligner(intrinsics, own).candidates((intrinsics.height, intrinsics.width))  # ~0.4 s, once
        self.last: Optional[MetricFrame] = None
        self.problem = ""
        self.none_since: Optional[float] = None
        self._lock = threading.Lock()

    @property
    def warning(self) -> Optional[str]:
        """The calibration's warnings as one line (None when it looks like a DB21's)."""
        return "; ".join(self.warnings) or None

    def _checked_plane(self, intrinsics: Intrinsics, intrinsics_origin: str) -> GroundPlane:
        """The ground plane for ``intrinsics``, checked for plausibility (CalibrationError for the
        impossible; warnings kept for the log and diagnostics, the values for diagnostics)."""
        warnings = check_intrinsics(intrinsics, intrinsics_origin)
        plane = ground_plane(self.extrinsics, intrinsics)
        warnings += check_pose(plane, self.source)
        self.values = calibration_values(plane, intrinsics)
        for line in warnings:
            if line not in self.warnings:
                self.warnings.append(line)
                if self.warn is not None:
                    self.warn("calibration", "metric depth: unlikely calibration: %s" % line)
        return plane

    def aligner_for(self, camera_info: Any) -> MetricAligner:
        """The aligner of this camera (a new one when the camera_info's calibration changes)."""
        return self._aligner(intrinsics_from_camera_info(camera_info), "camera_info")

    def _aligner(self, intrinsics: Intrinsics, origin: str) -> MetricAligner:
        """CalibrationError (the same one again, at no cost, for the same camera) when the camera's
        calibration cannot be used."""
        key = (intrinsics.width, intrinsics.height, tuple(intrinsics.K.ravel()), tuple(intrinsics.D))
        if self._rejected[0] == key:
            raise CalibrationError(self._rejected[1])
        if self._camera[0] != key:  # the old camera's ground maps and rays go with its aligner
            o = self.options
            try:
                plane = self._checked_plane(intrinsics, origin)
            except CalibrationError as exc:
                self._rejected = (key, str(exc))
                raise
            aligner = MetricAligner(plane, intrinsics, o.time_constant_s, o.hold_s, o.max_range_m, o.fit)
            self._camera = (key, aligner, None)
        return self._camera[1]

    def process(self, disparity: np.ndarray, stamp_s: float, camera_info: Any) -> Optional[MetricProducts]:
        """The metric products of one frame (``disparity``: the network's relative output at the frame's
        size), or None when there is no camera_info for it or the calibration does not fit the camera
        (``problem`` says why)."""
        if camera_info is None:
            return self._fail("no camera_info for the frame: metric depth needs the camera's intrinsics")
        try:
            aligner = self.aligner_for(camera_info)
        except (CalibrationError, ValueError, cv2.error) as exc:
            return self._fail("calibration %s does not fit this camera: %s" % (self.source, " ".join(
                str(exc).split())))
        mismatch = camera_info_problem(aligner.intrinsics, *disparity.shape)
        if mismatch:  # the one policy for a camera_info that does not describe the frame
            return self._fail(mismatch)
        intrinsics = aligner.intrinsics
        frame = aligner.update(disparity, stamp_s)
        scan, distance, points, tof = None, math.nan, None, None
        if frame.depth_m is not None:
            key, _, rays = self._camera
            if rays is None or rays.intrinsics != intrinsics:
                rays = FrameRays(intrinsics)
                self._camera = (key, aligner, rays)
            scan, distance, points = self._outputs(frame.depth_m, aligner.plane, intrinsics, rays)
            tof = self.tof.frame(stamp_s, frame.depth_m, *rays(*frame.depth_m.shape), aligner.plane)
        with self._lock:
            self.last, self.problem = frame, ""
            self.none_since = (self.none_since or stamp_s) if frame.state == "NONE" else None
        line = virtual_stop_line(distance, frame.state, self.options.stop_line_offset_m)
        return MetricProducts(frame, intrinsics, aligner.plane, scan, distance, points, tof, line)

    def rectified(self, products: MetricProducts) -> Tuple[np.ndarray, RectifiedCamera]:
        """The frame's metric depth on the rectified image and that image's camera_info fields, for
        ROS' depth tools (:mod:`depth_estimation.geometry.rectify`); ``products`` with a depth."""
        depth, intrinsics = products.frame.depth_m, products.intrinsics
        if self._rectifier is None or self._rectifier.intrinsics != intrinsics \
                or self._rectifier.shape != depth.shape:
            self._rectifier = DepthRectifier(intrinsics, *depth.shape)
        return self._rectifier(depth), self._rectifier.camera

    def _outputs(self, depth_m: np.ndarray, plane: GroundPlane, intrinsics: Intrinsics, rays: FrameRays):
        o = self.options
        half_fov = math.radians(o.scan_fov_deg) / 2.0
        heights = dict(min_height_m=o.obstacle_min_height_m, max_height_m=o.obstacle_max_height_m)
        scan = obstacles.laser_scan(depth_m, plane, intrinsics, angle_min=-half_fov, angle_max=half_fov,
                                    n_bins=o.scan_bins, range_max=o.max_range_m, rays=rays, **heights)
        distance = obstacles.obstacle_distance(depth_m, plane, intrinsics, o.corridor_width_m,
                                               max_range_m=o.obstacle_max_range_m, rays=rays, **heights)
        points = obstacles.points_camera(depth_m, intrinsics, o.points_step, rays) if o.points else None
        return scan, distance, points

    def _fail(self, problem: str) -> None:
        with self._lock:
            self.problem = problem
        if self.warn is not None and problem not in self._said:  # once per problem: diagnostics keep it
            self._said.add(problem)
            self.warn("metric_%d" % len(self._said), "metric depth: %s; publishing nothing metric" % problem)
        return None

    def report(self, now: float) -> Tuple[Dict[str, str], Optional[str]]:
        """(diagnostic values, warning or None) for the node's diagnostics."""
        with self._lock:
            frame, problem, none_since = self.last, self.problem, self.none_since
        values = {"metric_calibration": self.source, "metric_state": frame.state if frame else "NONE",
                  "metric_scale": "%.6g" % (frame.scale if frame else math.nan),
                  "metric_shift": "%.6g" % (frame.shift if frame else math.nan),
                  "metric_inliers": "%.3f" % (frame.inlier_share if frame else math.nan),
                  "ground_rmse": "%.4g" % (frame.ground_rmse if frame else math.nan)}
        values.update(("metric_" + k, v) for k, v in self.values.items())
        tof_values, tof_warning = self.tof.report()
        values.update(tof_values)
        if problem:  # the first cause a user should read: what stops the metric outputs now
            return values, "metric depth: " + problem
        if frame is not None and frame.state == "NONE" and none_since is not None \
                and now - none_since >= NONE_WARN_AFTER:
            cause = "; likely because " + self.warning if self.warning else ""
            return values, ("metric depth: no confident ground fit for %.1f s (ground not visible, or the "
                            "calibration does not match); publishing nothing metric%s"
                            % (now - none_since, cause))
        return values, tof_warning or self.warning or None


def check_calibration(params: Dict[str, Any], veh: str,
                      warn: Optional[Callable[[str, str], None]] = None) -> Optional[MetricOutputs]:
    """The node's :class:`MetricOutputs` when ``metric`` is on (None when off: no cost at all);
    CalibrationError with one line naming the file when the calibration cannot be used."""
    return MetricOutputs(MetricOptions.from_params(params), veh, warn) if params["metric"] else None


__all__ = ["MetricOptions", "MetricOutputs", "MetricProducts", "CalibrationError", "Extrinsics",
           "check_calibration"]
