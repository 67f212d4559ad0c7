"""The time-of-flight cross-check on a simulated bag (depth-sim2bag's ToF readings), offline::

    python3 -m depth_estimation.evaluation.tof_eval --bag sim.bag \\
        --extrinsics calib/camera_extrinsic/simbot.yaml [--model fastdepth-duckietown | exact] \\
        [--backend B] [--height-scale 1.5]

Runs the node's metric path (:class:`depth_estimation.framepath.metric.MetricOutputs`, with its
ToF check and the node's default parameters) on every frame of the bag, the ToF readings given in
stamp order before each frame as they would arrive, and prints the agreement: frames compared,
median ToF / metric ratio and residual, the state at the end and when it first said DISAGREE
(seconds after the first frame). ``--model exact`` uses the bag's exact depth as the network's
relative output (the check's own consistency). ``--height-scale S`` runs with the calibration's
camera height multiplied by S (same tilt and roll): a wrong calibration the check should catch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from typing import Callable, Optional, Sequence

import numpy as np
import yaml

from depth_estimation.framepath.metric import MetricOptions, MetricOutputs
from depth_estimation.framepath.params import check_params
from depth_estimation.geometry import tof
from depth_estimation.geometry.calibration import (ground_plane, homography_from_plane, read_extrinsics,
                                                   write_extrinsics)
from depth_estimation.geometry.camera import intrinsics_from_camera_info
from depth_estimation.io.bags import iter_messages, rgbd_topics
from depth_estimation.framepath.frames import decode
from depth_estimation.io.paths import PACKAGE_DIR

DEFAULTS = PACKAGE_DIR + "/config/depth_node/default.yaml"


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _exact(depth: np.ndarray, _rgb) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(depth > 0, 1.0 / depth, 0.0).astype(np.float32)


def scaled_height(extrinsics: str, camera_info, scale: float, out: str) -> str:
    """Write ``extrinsics`` with the camera's height multiplied by ``scale`` (for the camera of
    ``camera_info``) to ``out``; returns ``out``."""
    intrinsics = intrinsics_from_camera_info(camera_info)
    plane = ground_plane(read_extrinsics(extrinsics), intrinsics)
    t = plane.translation
    wrong = replace(plane, distance=scale * plane.distance, translation=(t[0], t[1], scale * t[2]))
    return write_extrinsics(out, homography_from_plane(wrong, intrinsics),
                            comment="%s with the camera height x%g" % (extrinsics, scale))


def run(bag: str, extrinsics: str, relative: Callable = _exact, veh: str = "simbot",
        height_scale: float = 1.0) -> dict:
    """The check on ``bag``; ``relative(depth, rgb)`` gives the network's output of a frame."""
    if height_scale != 1.0:
        info = next(msg for _topic, _t, msg in iter_messages(bag, [rgbd_topics(veh)[2]]))
        with tempfile.TemporaryDirectory() as tmp:
            path = scaled_height(extrinsics, info, height_scale, os.path.join(tmp, "extrinsics.yaml"))
            return run(bag, path, relative, veh)
    with open(DEFAULTS) as f:
        raw = yaml.safe_load(f)
    raw.update(metric=True, extrinsics_file=extrinsics)
    outputs = MetricOutputs(MetricOptions.from_params(check_params(raw)), veh)
    image_topic, depth_topic, info_topic = rgbd_topics(veh)
    tof_topic = "/%s/%s" % (veh, tof.TOPIC)
    frames, readings = {}, []
    for topic, _t, msg in iter_messages(bag, [image_topic, depth_topic, info_topic, tof_topic]):
        if topic == tof_topic:
            readings.append((_stamp(msg), float(msg.range)))
        else:
            frames.setdefault(_stamp(msg), {})[topic] = msg
    readings.sort()
    comparisons, caught, first, state = [], None, None, "NO_READINGS"
    for t in sorted(frames):
        parts = frames[t]
        first = t if first is None else first
        while readings and readings[0][0] <= t + 1e-6:
            outputs.tof.reading(*readings.pop(0))
        d = parts[depth_topic]
        depth = np.frombuffer(bytes(d.data), "<f4").reshape(d.height, d.width)
        rgb = decode(bytes(parts[image_topic].data))[:, :, ::-1] if relative is not _exact else None
        products = outputs.process(relative(depth, rgb), t, parts[info_topic])
        if products is not None and products.tof is not None:
            comparisons.append(products.tof)
        values, warning = outputs.report(t)
        state = values["tof_state"]
        if caught is None and state == "DISAGREE":
            caught = {"after_s": t - first, "warning": warning}
    ratios = np.array([c.ratio for c in comparisons])
    residuals = np.array([c.residual_m for c in comparisons])
    return {"frames": len(frames), "compared": len(comparisons), "comparisons": comparisons,
            "ratio_median": float(np.median(ratios)) if len(ratios) else float("nan"),
            "residual_median_m": float(np.median(residuals)) if len(residuals) else float("nan"),
            "abs_residual_median_m": float(np.median(np.abs(residuals))) if len(residuals) else float("nan"),
            "state": state, "caught": caught}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tof_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", required=True)
    parser.add_argument("--extrinsics", required=True)
    parser.add_argument("--model", default="exact")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--height-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    relative = _exact
    if args.model != "exact":
        from depth_estimation.runtime.estimator import DepthEstimator

        estimator = DepthEstimator(args.model, backend=args.backend, device="cpu").load()
        relative = lambda _depth, rgb: estimator.infer(rgb)  # noqa: E731
    result = run(args.bag, args.extrinsics, relative, height_scale=args.height_scale)
    result.pop("comparisons")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
