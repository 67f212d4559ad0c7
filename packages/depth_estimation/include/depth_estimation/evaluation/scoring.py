"""Scoring one frame: ground-truth messages to metres, crops, alignment and metrics.

Shared by ``depth-eval`` (bags read without ROS) and ``evaluator_node`` (live topics); no ROS or
bag library needed.
"""
from __future__ import annotations

import csv
from typing import Tuple

import numpy as np

from depth_estimation.evaluation import metrics
from depth_estimation.io.atomic import atomic_file


def depth_from_msg(msg) -> np.ndarray:
    """A sensor_msgs/Image (32FC1 metres or 16UC1 millimetres) as float32 HxW metres (0 = no data)."""
    encoding = str(msg.encoding)
    if encoding == "32FC1":
        dtype, scale = np.dtype(np.float32), 1.0
    elif encoding == "16UC1":
        dtype, scale = np.dtype(np.uint16), 1e-3
    else:
        raise ValueError("ground truth encoding %s; expected 32FC1 (metres) or 16UC1 (millimetres)" % encoding)
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = msg.data  # bytes from rospy, a uint8 array from rosbags
    raw = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    if raw.size < height * step or step < width * dtype.itemsize:
        raise ValueError("ground truth image of %d bytes does not hold %dx%d %s (step %d)"
                         % (raw.size, height, width, encoding, step))
    rows = raw[: height * step].reshape(height, step)[:, : width * dtype.itemsize]
    depth = np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.float32)
    return depth * np.float32(scale) if scale != 1.0 else depth


def resolve_crop(crop: str, shape: Tuple[int, ...], depth_topic: str) -> str:
    """``auto``: the Eigen crop for NYU bags (depth-nyu2bag's ``/nyu/`` topics, 480x640), none otherwise."""
    if crop == "auto":
        nyu = depth_topic.startswith("/nyu/") and tuple(shape[:2]) == metrics.EIGEN_FRAME
        return "eigen" if nyu else "none"
    return crop


def _resize(pred: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    import cv2

    return cv2.resize(pred.astype(np.float32), (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


def score_frame(index: int, stamp: int, pred: np.ndarray, gt: np.ndarray, kind: str, align: str, crop: str,
                depth_topic: str, min_depth: float, max_depth: float) -> Tuple[dict, str, bool]:
    """One frame's metrics: (record, crop used, scored?). ``pred`` is the raw model output."""
    if pred.shape != gt.shape:  # ground truth at another resolution than the camera: score at its size
        pred = _resize(pred, gt.shape)
    crop_name = resolve_crop(crop, gt.shape, depth_topic)
    mask = metrics.valid_mask(gt, min_depth, max_depth, crop_name)
    record = {"index": index, "stamp": stamp / 1e9, "stamp_ns": stamp, "valid_pixels": int(mask.sum())}
    if not mask.any():
        return record, crop_name, False
    record.update(metrics.compute(metrics.align(pred, gt, mask, align, kind, min_depth, max_depth), gt, mask))
    return record, crop_name, True


def write_csv(path: str, result: dict) -> None:
    columns = ["frame", "stamp", "valid_pixels"] + list(metrics.METRICS)
    with atomic_file(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in result["per_frame"]:
            writer.writerow([row["index"], "%.9f" % row["stamp"], row["valid_pixels"]]
                            + ["%.6f" % row[k] for k in metrics.METRICS])
        writer.writerow(["mean", "", sum(r["valid_pixels"] for r in result["per_frame"])]
                        + ["%.6f" % result["metrics"][k] for k in metrics.METRICS])


def add_source_arguments(parser, predictions_help: str) -> None:
    """The options of every scorer: a model to run or a folder of another model's predictions."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model spec to run (see depth_estimation.models)")
    source.add_argument("--predictions", help=predictions_help)
    parser.add_argument("--pred-kind", choices=metrics.KINDS, default="disparity",
                        help="what --predictions hold (a --model gives disparity)")
    parser.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt (with --model)")
    parser.add_argument("--input-size", type=int, default=518, help="network input short side (with --model)")
