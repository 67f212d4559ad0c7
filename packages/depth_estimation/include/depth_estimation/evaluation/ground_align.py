"""``depth-eval --align ground``: metres from the ground plane, no ground truth used for the scale.

Each frame's prediction (relative disparity; a ``--pred-kind depth`` prediction is inverted first) is
fitted to the disparity of the ground the camera is known to look at, exactly as the node does on the
robot (:func:`depth_estimation.geometry.ground.fit_ground`, per frame, no temporal filter): the ground
comes from ``--extrinsics FILE.yaml`` (a Duckietown extrinsic calibration, with the intrinsics of the
bag's camera_info) or ``--ground-plane HEIGHT_M,PITCH_DEG[,ROLL_DEG]`` (the camera's optical centre
``HEIGHT_M`` above a flat ground, its optical axis ``PITCH_DEG`` below the horizontal, rolled
``ROLL_DEG`` about the optical axis). The fit becomes metres with the node's own conversion
(:func:`~depth_estimation.geometry.ground.metric_depth`: NaN beyond ``--ground-max-range``, the node's
``metric_max_range``, 5 m by default, so those pixels count as invalid, not as clamped guesses),
then scored with the usual metrics. A frame whose fit is not
confident (too few ground inliers) is not scored: it is listed as skipped, and ``ground.confident_share``
is the share of frames with a confident fit.
"""
from __future__ import annotations

import argparse
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from depth_estimation.geometry import ground as ground_fit
from depth_estimation.geometry.calibration import (CalibrationError, Intrinsics, ground_plane,
                                                   intrinsics_from_camera_info, plane_from_height_pitch,
                                                   read_extrinsics)
from depth_estimation.io import bags

GROUND = "ground"
NO_CONFIDENT_FIT = "no confident ground fit"


def parse_ground_plane(text: str) -> Tuple[float, float, float]:
    """``HEIGHT_M,PITCH_DEG[,ROLL_DEG]`` -> (height, pitch, roll); argparse error otherwise."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or not all(math.isfinite(v) for v in values) or values[0] <= 0:
        raise argparse.ArgumentTypeError("--ground-plane %r: expected HEIGHT_M,PITCH_DEG[,ROLL_DEG] with a "
                                         "height > 0, e.g. 0.1,15" % text)
    return values[0], values[1], values[2] if len(values) == 3 else 0.0


def add_ground_arguments(parser: argparse.ArgumentParser) -> None:
    """depth-eval's options for ``--align ground`` (defaults shared with the node's, from
    :mod:`depth_estimation.geometry.ground`)."""
    group = parser.add_argument_group("--align ground (metres from the ground plane, no ground truth)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--extrinsics", metavar="FILE.yaml",
                        help="Duckietown extrinsic calibration (ground homography); intrinsics from the "
                             "bag's camera_info")
    source.add_argument("--ground-plane", metavar="H,PITCH[,ROLL]", type=parse_ground_plane,
                        help="camera height above the ground (m), pitch below the horizontal and roll "
                             "(degrees), for data that is not from a Duckiebot")
    group.add_argument("--ground-threshold", type=float, default=ground_fit.FitOptions.threshold,
                       help="ground inlier: relative disparity residual below this (default %(default)s)")
    group.add_argument("--ground-min-inlier-share", type=float,
                       default=ground_fit.FitOptions.min_inlier_share,
                       help="a fit is confident with at least this share of ground candidates as inliers "
                            "(default %(default)s)")
    group.add_argument("--ground-max-range", type=float, default=ground_fit.DEFAULT_MAX_RANGE_M,
                       help="metric depth beyond this is NaN, as the node's metric_max_range; ground "
                            "candidates up to it, m (default %(default)s)")
    group.add_argument("--figure", metavar="PNG",
                       help="write camera | relative | metric (ground inliers marked) of one frame here")
    group.add_argument("--figure-frame", type=int, default=0, metavar="N",
                       help="the frame of --figure (default 0)")


def check_ground_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse errors for ground options given without ``--align ground`` or a ground source missing."""
    if args.align == GROUND:
        if not args.extrinsics and not args.ground_plane:
            parser.error("--align ground needs --extrinsics FILE.yaml or --ground-plane HEIGHT_M,PITCH_DEG")
    elif args.extrinsics or args.ground_plane or args.figure:
        parser.error("--extrinsics, --ground-plane and --figure belong to --align ground")


def bag_intrinsics(bag: str, image_topic: str) -> Tuple[Intrinsics, str]:
    """(intrinsics, topic) of the bag's camera_info (the one beside ``image_topic``, else the only one);
    ValueError naming the bag when there is none."""
    from rosbags.rosbag1 import Reader  # optional: only bag readers need it

    with Reader(bag) as reader:
        topics = sorted({c.topic for c in reader.connections if c.msgtype == bags.INFO_TYPE})
    beside = image_topic.rsplit("/image/", 1)[0] + "/camera_info"
    topic = beside if beside in topics else (topics[0] if len(topics) == 1 else None)
    if topic is None:
        raise ValueError("%s has %s CameraInfo topics (%s): --align ground --extrinsics needs the camera's "
                         "intrinsics beside %s (depth-rgbd2bag writes them from --fx --fy --cx --cy)"
                         % (bag, "no" if not topics else "several", ", ".join(topics) or "-", image_topic))
    for _topic, _t, msg in bags.iter_messages(bag, [topic]):
        return intrinsics_from_camera_info(msg, origin="%s %s" % (bag, topic)), topic
    raise ValueError("%s: no message on %s" % (bag, topic))


class GroundScorer:
    """The ground plane of one bag and the per-frame fit of its predictions to it."""

    def __init__(self, intrinsics: Intrinsics, extrinsics: Optional[str] = None,
                 plane_hpr: Optional[Tuple[float, float, float]] = None,
                 threshold: float = ground_fit.FitOptions.threshold,
                 min_inlier_share: float = ground_fit.FitOptions.min_inlier_share,
                 max_range_m: float = ground_fit.DEFAULT_MAX_RANGE_M):
        if (extrinsics is None) == (plane_hpr is None):
            raise ValueError("give exactly one of extrinsics and plane_hpr")
        self.intrinsics = intrinsics
        if extrinsics is not None:
            self.plane = ground_plane(read_extrinsics(extrinsics), intrinsics)
            self.source = {"extrinsics": extrinsics}
        else:
            self.plane = plane_from_height_pitch(*plane_hpr)
            self.source = {"ground_plane": list(plane_hpr)}
        self.options = ground_fit.FitOptions(threshold=threshold, min_inlier_share=min_inlier_share)
        self.max_range_m = max_range_m
        self.confident = []  # type: List[bool]

    def _fit(self, index: int, pred: np.ndarray, kind: str):
        """(disparity, ground disparity, candidates, fit) of frame ``index``'s prediction."""
        pred = np.asarray(pred, np.float32)
        if kind == "depth":
            with np.errstate(divide="ignore", invalid="ignore"):
                disparity = np.where(pred > 0, 1.0 / pred, np.nan).astype(np.float32)
        else:
            disparity = pred
        cam = self.intrinsics.for_frame(*pred.shape)
        gd, candidates = ground_fit.ground_candidates(self.plane, cam, pred.shape[0], pred.shape[1],
                                                      self.max_range_m)
        fit = ground_fit.fit_ground(disparity, gd, candidates, self.options,
                                    rng=np.random.default_rng(index))
        return disparity, gd, candidates, fit

    def _depth(self, fit, disparity: np.ndarray) -> np.ndarray:
        return ground_fit.metric_depth(disparity, fit.scale, fit.shift, self.max_range_m)  # the node's

    def metric(self, index: int, pred: np.ndarray, kind: str) -> Tuple[Optional[np.ndarray], Dict]:
        """(metric depth with NaN where the prediction has no value, or None without a confident fit;
        the frame's ground record)."""
        disparity, _gd, _cand, fit = self._fit(index, pred, kind)
        self.confident.append(bool(fit.ok))
        record = {"ground_scale": fit.scale, "ground_shift": fit.shift,
                  "ground_inlier_share": fit.inlier_share, "ground_rmse": fit.rmse, "ground_ok": bool(fit.ok)}
        if not fit.ok:
            record["skipped"] = "%s (%s)" % (NO_CONFIDENT_FIT, fit.reason)
            return None, record
        return self._depth(fit, disparity), record

    def figure(self, path: str, index: int, rgb: np.ndarray, pred: np.ndarray, kind: str) -> str:
        """Write frame ``index``'s camera | relative | metric figure (ground inliers marked) to ``path``."""
        from depth_estimation.evaluation.ground_figure import write_ground_figure

        disparity, gd, candidates, fit = self._fit(index, pred, kind)
        depth = self._depth(fit, disparity) if fit.scale > 0 else np.full(pred.shape, np.nan)
        inliers = ground_fit.inlier_mask(disparity, gd, candidates, fit.scale, fit.shift,
                                         self.options.threshold)
        title = ("frame %d: camera %.2f m above the ground, pitch %.1f deg; fit %s, ground inliers %.0f %%, "
                 "ground RMSE %.3f m" % (index, self.plane.height_m, self.plane.pitch_deg,
                                          "confident" if fit.ok else "NOT confident", 100 * fit.inlier_share,
                                          fit.rmse))
        return write_ground_figure(path, rgb, disparity, depth.astype(np.float32), inliers, title)

    def summary(self) -> Dict:
        confident = sum(self.confident)
        return dict(self.source, height_m=self.plane.height_m, pitch_deg=self.plane.pitch_deg,
                    roll_deg=self.plane.roll_deg, horizon_row=self.plane.horizon_row(self.intrinsics),
                    frames_fitted=len(self.confident), confident_frames=confident,
                    confident_share=confident / float(len(self.confident)) if self.confident else 0.0,
                    max_range_m=self.max_range_m, threshold=self.options.threshold,
                    min_inlier_share=self.options.min_inlier_share)


def make_scorer(bag: str, image_topic: str, extrinsics: Optional[str], plane_hpr, threshold: float,
                min_inlier_share: float, max_range_m: float) -> GroundScorer:
    """The :class:`GroundScorer` of ``bag``: intrinsics from its camera_info; CalibrationError (a
    ValueError) naming a bad calibration file."""
    intrinsics, topic = bag_intrinsics(bag, image_topic)
    scorer = GroundScorer(intrinsics, extrinsics, plane_hpr, threshold, min_inlier_share, max_range_m)
    scorer.source["camera_info_topic"] = topic
    return scorer


__all__ = ["GROUND", "NO_CONFIDENT_FIT", "CalibrationError", "GroundScorer", "add_ground_arguments",
           "bag_intrinsics", "check_ground_arguments", "make_scorer", "parse_ground_plane"]
