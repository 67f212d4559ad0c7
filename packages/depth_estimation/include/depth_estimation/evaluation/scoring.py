"""Scoring one frame: crops, alignment and metrics (ground-truth messages to metres:
:func:`depth_estimation.io.rgbd.depth_from_msg`).

Shared by ``depth-eval`` (bags read without ROS) and ``evaluator_node`` (live topics); no ROS or
bag library needed. Also the source options depth-eval and depth-da2k share (a model to run or a
folder of predictions), built from :mod:`depth_estimation.options`.

The RGB-D converters record which dataset a bag holds: one std_msgs/String on ``/<ns>/dataset``
(:func:`depth_estimation.io.bags.dataset_topic`; ``"nyu"`` from depth-nyu2bag, ``"rgbd"`` from
depth-rgbd2bag), so that ``--crop auto`` knows a NYU bag whatever its namespace (:func:`resolve_crop`).
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from depth_estimation import options
from depth_estimation.evaluation import metrics
from depth_estimation.io.atomic import atomic_file

NYU = "nyu"  # the dataset name depth-nyu2bag records: --crop auto uses the Eigen crop
NO_GROUND_TRUTH = "no valid ground-truth pixels"
ALL_INVALID = "all prediction pixels invalid"


def resolve_crop(crop: str, shape: Tuple[int, ...], depth_topic: str, dataset: Optional[str] = None) -> str:
    """``auto``: the Eigen crop when the bag records the dataset ``nyu`` (:data:`NYU`), none when it
    records another. Bags without a record (written before it existed) keep the old rule: Eigen
    for depth-nyu2bag's default ``/nyu/`` topics at 480x640, none otherwise."""
    if crop != "auto":
        return crop
    if dataset is not None:
        return "eigen" if dataset == NYU else "none"
    nyu = depth_topic.startswith("/nyu/") and tuple(shape[:2]) == metrics.EIGEN_FRAME
    return "eigen" if nyu else "none"


def _resize(pred: np.ndarray, shape: Tuple[int, ...], kind: str) -> np.ndarray:
    """``pred`` bilinearly resized to ``shape``; NaN wherever a pixel without a value contributed."""
    import cv2  # heavy; only predictions at another size than the ground truth need it

    size = (int(shape[1]), int(shape[0]))
    usable = metrics.valid_prediction(pred, kind)
    out = cv2.resize(np.where(usable, pred, 0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    if not usable.all():
        out[cv2.resize((~usable).astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0] = np.nan
    return out


@dataclass(frozen=True)
class ScoreOptions:
    """How frames are scored, checked once (``depth-eval``'s and the evaluator node's options):
    alignment, crop (a name or ``auto``: from the depth topic, the dataset and the frame size), the
    ground truth's depth topic and dataset, and the depth range in metres."""

    align: str
    crop: str = "auto"
    depth_topic: str = ""
    min_depth: float = 1e-3
    max_depth: float = 10.0
    dataset: Optional[str] = None

    def __post_init__(self):
        if self.align not in metrics.ALIGN_MODES:
            raise ValueError("align %r: use one of %s" % (self.align, ", ".join(metrics.ALIGN_MODES)))
        if not 0.0 <= self.min_depth < self.max_depth:
            raise ValueError("depth range %g..%g m: need 0 <= min_depth < max_depth"
                             % (self.min_depth, self.max_depth))


def score_frame(index: int, stamp: int, pred: np.ndarray, gt: np.ndarray, kind: str,
                opts: ScoreOptions) -> Tuple[dict, str, bool]:
    """One frame's metrics: (record, crop used, scored?). ``pred`` is the raw model output of ``kind``.

    The record always holds ``valid_pixels`` (ground truth in range, inside the crop) and
    ``invalid_prediction_pixels`` (those of them where ``pred`` has no value: NaN, inf, a depth
    <= 0), which are left out of the alignment and the metrics. A frame that cannot be scored has
    ``skipped`` = :data:`NO_GROUND_TRUTH` or :data:`ALL_INVALID` instead of metrics."""
    if pred.shape != gt.shape:  # ground truth at another resolution than the camera: score at its size
        pred = _resize(pred, gt.shape, kind)
    crop_name = resolve_crop(opts.crop, gt.shape, opts.depth_topic, opts.dataset)
    mask = metrics.valid_mask(gt, opts.min_depth, opts.max_depth, crop_name)
    scored = mask & metrics.valid_prediction(pred, kind)
    record = {"index": index, "stamp": stamp / 1e9, "stamp_ns": stamp, "valid_pixels": int(mask.sum()),
              "invalid_prediction_pixels": int(mask.sum() - scored.sum())}
    if not scored.any():
        record["skipped"] = ALL_INVALID if mask.any() else NO_GROUND_TRUTH
        return record, crop_name, False
    aligned = metrics.align(pred, gt, mask, opts.align, kind, opts.min_depth, opts.max_depth)
    record.update(metrics.compute(aligned, gt, scored))
    return record, crop_name, True


def frame_list(indices: Sequence[int], limit: int = 20) -> str:
    """``frame 3`` / ``frames 0, 1, 2`` (the first ``limit``, then how many in all)."""
    shown = ", ".join(str(i) for i in indices[:limit])
    more = ", ... (%d in all)" % len(indices) if len(indices) > limit else ""
    return "frame%s %s%s" % ("s" if len(indices) > 1 else "", shown, more)


def write_csv(path: str, result: dict) -> None:
    """One row per scored frame and a ``mean`` row (pixel columns summed), invalid prediction
    pixels last so the earlier columns keep their places."""
    columns = ["frame", "stamp", "valid_pixels"] + list(metrics.METRICS) + ["invalid_prediction_pixels"]
    frames = result["per_frame"]
    with atomic_file(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in frames:
            writer.writerow([row["index"], "%.9f" % row["stamp"], row["valid_pixels"]]
                            + ["%.6f" % row[k] for k in metrics.METRICS] + [row["invalid_prediction_pixels"]])
        writer.writerow(["mean", "", sum(r["valid_pixels"] for r in frames)]
                        + ["%.6f" % result["metrics"][k] for k in metrics.METRICS]
                        + [sum(r["invalid_prediction_pixels"] for r in frames)])


def add_source_arguments(parser: argparse.ArgumentParser, predictions_help: str) -> None:
    """The options of every scorer: ``--model`` to run (with the shared ``--backend``, ``--device``,
    ``--threads`` and ``--input-size``) or ``--predictions``, a folder of another model's outputs."""
    source = parser.add_mutually_exclusive_group(required=True)
    options.add_model(source, required=False)
    source.add_argument("--predictions", metavar="DIR", help=predictions_help)
    parser.add_argument("--pred-kind", choices=metrics.KINDS, default="disparity",
                        help="what --predictions hold (a --model gives disparity; default disparity)")
    options.add_runtime(parser)


def load_estimator(args: argparse.Namespace):
    """The loaded :class:`~depth_estimation.runtime.estimator.DepthEstimator` of ``--model`` and the
    runtime options."""
    from depth_estimation.runtime.estimator import DepthEstimator  # lazy: the evaluator node needs no runtime

    return DepthEstimator(**options.estimator_kwargs(args)).load()


def model_record(estimator) -> dict:
    """What a result records of a loaded model run: backend, device, threads and the input short
    side it ran at (``--input-size 0`` recorded as the model's own size; None for an ONNX file)."""
    return {"backend": estimator.backend, "device": estimator.device, "threads": estimator.threads,
            "input_size": estimator.input_size}
