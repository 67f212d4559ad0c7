"""``depth-eval``: score a depth model against the ground truth of an RGB-D bag (no ROS needed).

The bag holds camera frames on ``/<ns>/camera_node/image/compressed`` (sensor_msgs/CompressedImage,
PNG or JPEG) and ground truth on ``/<ns>/depth_gt/image_raw`` (sensor_msgs/Image, 32FC1 metres;
16UC1 millimetres also read) with the same header stamps (read by :mod:`depth_estimation.io.rgbd`).
Frames are paired by header stamp, in
the order their pair completes in the bag (that order numbers ``--save-predictions`` files);
frames without a partner are reported as unmatched. Each frame's prediction is aligned to its
ground truth (``--align``, default ``lsq-disparity``; see depth_estimation.evaluation.metrics),
scored over valid pixels, and the overall metrics are the mean of the per-frame metrics.

    depth-eval --bag rgbd.bag --model da2-small --align lsq-disparity --json eval.json --csv eval.csv
    depth-eval --bag rgbd.bag --predictions PRED --pred-kind depth --align median --crop eigen

On bags with obstacle ground truth (depth-sim2bag), ``--align ground`` adds the obstacle-pixel and
obstacle-distance metrics (depth_estimation.evaluation.obstacle_eval) to the result.
``--align ground`` needs no ground truth for the scale: it fits each prediction to the ground plane of
``--extrinsics FILE.yaml`` (a Duckietown extrinsic calibration, intrinsics from the bag's camera_info)
or ``--ground-plane HEIGHT_M,PITCH_DEG[,ROLL_DEG]`` and scores the metres it gives (see
depth_estimation.evaluation.ground_align; ``--figure PNG`` draws one frame):

    depth-eval --bag rgbd.bag --predictions PRED --align ground --extrinsics robot.yaml --figure fig.png

``--crop auto`` = the NYU Eigen crop for NYU bags (the bag records its dataset on ``/<ns>/dataset``;
bags written before that: ``/nyu/...`` topics at 480x640), no crop otherwise. Prediction pixels
without a value (NaN, inf; a depth <= 0) are left out of the alignment and the metrics and counted
(``invalid_prediction_pixels``); a frame with no valid prediction pixel at all is an error.
``--model`` runs with the shared ``--backend``, ``--device``, ``--threads`` and ``--input-size``
options (0 = the model's own input size).
``--predictions DIR`` reads ``DIR/000000.npy``, ``DIR/000001.npy``... (float HxW at frame size)
in frame order; ``--save-predictions DIR`` writes the model's raw output (relative disparity,
float32 at frame size, before alignment) in the same layout.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from depth_estimation import options
from depth_estimation.evaluation import ground_align, metrics, obstacle_eval
from depth_estimation.evaluation.scoring import (ALL_INVALID, add_source_arguments, frame_list,
                                                 load_estimator, model_record, ScoreOptions, score_frame,
                                                 write_csv)
from depth_estimation.framepath import frames
from depth_estimation.io import bags
from depth_estimation.io.atomic import atomic_file, output_problem, write_error, write_json
from depth_estimation.io.images import image_size
from depth_estimation.io.rgbd import bag_dataset, depth_from_msg, detect_topics, paired_frames

log = logging.getLogger(__name__)

CROP_CHOICES = ("auto", "eigen", "garg", "none")
DEFAULT_ALIGN = "lsq-disparity"
ALIGN_CHOICES = metrics.ALIGN_MODES + (ground_align.GROUND,)


def rgb_from_msg(msg) -> np.ndarray:
    bgr = frames.decode(bytes(msg.data), str(msg.format))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frame_size(msg) -> Tuple[int, int]:
    """(height, width) of a CompressedImage from its header (decoded when the header is odd)."""
    return image_size(bytes(msg.data))


def _prediction(index: int, image_msg, estimator, predictions: Optional[str], pred_kind: str,
                save_predictions: Optional[str]) -> Tuple[np.ndarray, str]:
    """Frame ``index``'s (prediction at frame size, kind): the model's raw output (saved to
    ``save_predictions`` when given), or ``predictions/<index>.npy`` checked against the frame size."""
    name = "%06d.npy" % index
    if estimator is not None:
        pred = np.asarray(estimator.infer(rgb_from_msg(image_msg)), np.float32)
        if save_predictions:
            with atomic_file(os.path.join(save_predictions, name), "wb") as f:
                np.save(f, pred)
        return pred, "disparity"
    path = os.path.join(predictions, name)
    if not os.path.isfile(path):
        raise FileNotFoundError("no prediction for frame %d: %s is missing" % (index, path))
    pred = np.load(path).astype(np.float32)
    frame_hw = frame_size(image_msg)
    if pred.shape != tuple(frame_hw):
        raise ValueError("%s has shape %s; expected the frame size %dx%d" % (path, pred.shape, *frame_hw))
    return pred, pred_kind


def _check_modes(estimator, predictions: Optional[str], crop: str, align: str) -> None:
    if (estimator is None) == (predictions is None):
        raise ValueError("give exactly one of estimator and predictions")
    if crop not in CROP_CHOICES:
        raise ValueError("crop %r; use one of %s" % (crop, ", ".join(CROP_CHOICES)))
    if align not in ALIGN_CHOICES:
        raise ValueError("align %r; use one of %s" % (align, ", ".join(ALIGN_CHOICES)))


def _score_frames(frames_iter, bag_info: dict, estimator, predictions: Optional[str], pred_kind: str,
                  save_predictions: Optional[str], align: str, crop: str, depth_range: Tuple[float, float],
                  ground=None, figure: Optional[Tuple[str, int]] = None, truth=None):
    """(scored records, skipped records, crops used) of every paired frame. ``ground``: the
    :class:`~depth_estimation.evaluation.ground_align.GroundScorer` of ``--align ground``; ``truth``: the
    bag's :class:`~depth_estimation.evaluation.obstacle_eval.ObstacleTruth` (with ``ground``)."""
    per_frame, skipped, crops = [], [], set()
    for index, (stamp, image_msg, depth_msg) in enumerate(frames_iter):
        gt = depth_from_msg(depth_msg)
        pred, kind = _prediction(index, image_msg, estimator, predictions, pred_kind, save_predictions)
        extra = {}  # type: dict
        if ground is not None:
            if figure is not None and index == figure[1]:
                ground.figure(figure[0], index, rgb_from_msg(image_msg), pred, kind)
            pred, extra = ground.metric(index, pred, kind)
            kind = "depth"
            if pred is None:
                skipped.append(dict(extra, index=index, stamp=stamp / 1e9, stamp_ns=stamp))
                log.warning("frame %d (stamp %d): %s; skipped", index, stamp, extra["skipped"])
                continue
        record, crop_name, ok = score_frame(index, stamp, pred, gt, kind, ScoreOptions(
            "none" if ground else align, crop, bag_info["depth_topic"], depth_range[0], depth_range[1],
            bag_info["dataset"]))
        record.update(extra)
        if truth is not None and ok:
            record.update(truth.score(stamp, pred, gt, ground.plane, ground.intrinsics, depth_range))
        crops.add(crop_name)
        if not ok:
            log.warning("frame %d (stamp %d): %s; skipped", index, stamp, record["skipped"])
        (per_frame if ok else skipped).append(record)
    return per_frame, skipped, crops


def _check_scored(bag: str, per_frame: List[dict], skipped: List[dict], unmatched: Dict[str, List[int]],
                  kind: str) -> int:
    """ValueError naming the frames whose predictions had no value at all, or when no frame was
    scored; else the total of invalid prediction pixels (logged when there are any)."""
    hopeless = [r["index"] for r in skipped if r["skipped"] == ALL_INVALID]
    what = "NaN, inf" + (" or depth <= 0" if kind == "depth" else "")
    if hopeless:
        raise ValueError("%s (%s) on the valid ground-truth pixels of %s of %s: check the model or "
                         "the predictions" % (ALL_INVALID, what, frame_list(hopeless), bag))
    if not per_frame:
        raise ValueError("no frame of %s could be scored (%d paired, %d unmatched images, "
                         "%d unmatched depths)"
                         % (bag, len(skipped), len(unmatched["images"]), len(unmatched["depths"])))
    invalid = sum(r["invalid_prediction_pixels"] for r in per_frame)
    if invalid:
        log.warning("%d prediction pixels without a value (%s) in %d frames: left out of the "
                    "alignment and the metrics", invalid, what,
                    sum(1 for r in per_frame if r["invalid_prediction_pixels"]))
    return invalid


def evaluate(bag: str, align: str = DEFAULT_ALIGN, estimator=None, predictions: Optional[str] = None,
             pred_kind: str = "disparity", crop: str = "auto", min_depth: float = 1e-3,
             max_depth: float = 10.0, image_topic: Optional[str] = None, depth_topic: Optional[str] = None,
             save_predictions: Optional[str] = None, progress: bool = False, ground: Optional[dict] = None,
             figure: Optional[str] = None, figure_frame: int = 0, stride: int = 1) -> dict:
    """Score ``estimator`` (a loaded DepthEstimator) or the ``.npy`` files in ``predictions`` on ``bag``.
    ``align="ground"`` takes ``ground`` = the arguments of
    :func:`~depth_estimation.evaluation.ground_align.make_scorer` after the bag and image topic
    (extrinsics, plane_hpr, threshold, min_inlier_share, max_range_m)."""
    _check_modes(estimator, predictions, crop, align)
    image_topic, depth_topic = detect_topics(bag, image_topic, depth_topic)
    scorer = None
    if align == ground_align.GROUND:
        if not ground:
            raise ValueError("align ground needs an extrinsic calibration or a ground plane")
        scorer = ground_align.make_scorer(bag, image_topic, **ground)
    bag_info = {"depth_topic": depth_topic, "dataset": bag_dataset(bag, depth_topic)}
    truth = obstacle_eval.ObstacleTruth.from_bag(bag, depth_topic) if scorer is not None else None
    kind = "disparity" if estimator is not None else pred_kind
    if save_predictions:
        os.makedirs(save_predictions, exist_ok=True)
    unmatched = {"images": [], "depths": []}  # type: Dict[str, List[int]]
    # stride: every stride-th paired frame (numbered 0, 1, ... among those), for benchmarks of slow models
    frames_iter = itertools.islice(paired_frames(bag, image_topic, depth_topic, unmatched), 0, None,
                                   max(1, stride))
    if progress:
        from tqdm import tqdm  # optional: only for the progress bar

        frames_iter = tqdm(frames_iter, desc="depth-eval", unit="frame")
    per_frame, skipped, crops = _score_frames(frames_iter, bag_info, estimator, predictions, pred_kind,
                                              save_predictions, align, crop, (min_depth, max_depth), scorer,
                                              (figure, figure_frame) if figure else None, truth)
    if scorer is not None and not per_frame and skipped:
        reasons = "; ".join(sorted({r.get("skipped", "") for r in skipped}))[:300]
        raise ValueError("no frame of %s has a confident ground fit (%s): check the calibration and the "
                         "predictions" % (bag, reasons))
    if unmatched["images"] or unmatched["depths"]:
        log.warning("%d camera frames and %d ground-truth frames had no partner with the same stamp",
                    len(unmatched["images"]), len(unmatched["depths"]))
    invalid = _check_scored(bag, per_frame, skipped, unmatched, kind)
    extra = {"ground": scorer.summary()} if scorer is not None else {}
    if truth is not None:
        extra["obstacles"] = obstacle_eval.summarize(per_frame)
    return dict(extra, **{
        "metrics": metrics.mean_metrics(per_frame),
        "frames": len(per_frame),
        "per_frame": per_frame,
        "skipped": skipped,
        "invalid_prediction_pixels": invalid,
        "align": align,
        "crop": crop if crop != "auto" else "auto:" + ",".join(sorted(crops)),
        "dataset": bag_info["dataset"],
        "pred_kind": kind,
        "min_depth": min_depth,
        "max_depth": max_depth,
        "bag": bag,
        "image_topic": image_topic,
        "depth_topic": depth_topic,
        "unmatched": {"images": len(unmatched["images"]), "depths": len(unmatched["depths"]),
                      "image_stamps_ns": unmatched["images"], "depth_stamps_ns": unmatched["depths"]},
    })


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depth-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", required=True,
                        help="RGB-D bag (CompressedImage frames + 32FC1 ground truth)")
    add_source_arguments(parser, "folder of 000000.npy... predictions in frame order")
    parser.add_argument("--align", default=DEFAULT_ALIGN, choices=ALIGN_CHOICES,
                        help="how predictions are aligned: to the ground truth (lsq-disparity, median), not "
                             "at all (none), or to the calibrated ground plane without ground truth (ground) "
                             "(default %s)" % DEFAULT_ALIGN)
    parser.add_argument("--crop", choices=CROP_CHOICES, default="auto",
                        help="auto: Eigen crop for NYU bags (the dataset the bag records; for older "
                             "bags /nyu/ topics at 480x640), none otherwise")
    parser.add_argument("--min-depth", type=float, default=1e-3)
    parser.add_argument("--max-depth", type=float, default=10.0)
    parser.add_argument("--image-topic", help="default: the bag's single CompressedImage topic "
                                              "(/<ns>/camera_node/image/compressed)")
    parser.add_argument("--depth-topic",
                        help="default: the bag's single 32FC1 Image topic (/<ns>/depth_gt/image_raw)")
    options.add_json_csv(parser)
    parser.add_argument("--save-predictions", metavar="DIR",
                        help="with --model: save raw outputs as DIR/000000.npy...")
    ground_align.add_ground_arguments(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.save_predictions and not args.model:
        parser.error("--save-predictions needs --model")
    ground_align.check_ground_arguments(parser, args)
    ground = None
    if args.align == ground_align.GROUND:
        ground = {"extrinsics": args.extrinsics, "plane_hpr": args.ground_plane,
                  "threshold": args.ground_threshold, "min_inlier_share": args.ground_min_inlier_share,
                  "max_range_m": args.ground_max_range}
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    problems = [output_problem(path) for path in (args.json, args.csv, args.figure) if path]
    problems.append(bags.bag_problem(args.bag))
    if any(problems):  # before the work: a long evaluation is not lost to its output place
        print("\n".join("error: %s" % p for p in problems if p), file=sys.stderr)
        return 1
    try:
        estimator = None
        if args.model:
            estimator = load_estimator(args)
        elif not os.path.isdir(args.predictions):
            raise FileNotFoundError("--predictions %s is not a folder" % args.predictions)
        result = evaluate(args.bag, args.align, estimator, args.predictions, args.pred_kind, args.crop,
                          args.min_depth, args.max_depth, args.image_topic, args.depth_topic,
                          args.save_predictions, progress=sys.stderr.isatty(), ground=ground,
                          figure=args.figure, figure_frame=args.figure_frame)
    except (OSError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    result["model"] = args.model
    result["predictions"] = args.predictions
    if estimator is not None:
        result.update(model_record(estimator))
    print("%d frames (%d unmatched images, %d unmatched depths), align %s, crop %s" % (
        result["frames"], result["unmatched"]["images"], result["unmatched"]["depths"], result["align"],
        result["crop"]))
    print("  ".join("%s %.4f" % (k, result["metrics"][k]) for k in metrics.METRICS))
    if "ground" in result:
        g = result["ground"]
        print("ground plane: camera %.3f m above, pitch %.1f deg, roll %.1f deg; confident fits %d of %d "
              "frames" % (g["height_m"], g["pitch_deg"], g["roll_deg"], g["confident_frames"],
                          g["frames_fitted"]))
    if "obstacles" in result:
        print(obstacle_eval.summary_line(result["obstacles"]))
    if result["invalid_prediction_pixels"]:
        print("%d prediction pixels without a value left out" % result["invalid_prediction_pixels"])
    for path, write in ((args.json, write_json), (args.csv, write_csv)):
        try:
            if path:
                write(path, result)
        except OSError as exc:
            print("error: %s" % write_error(path, exc), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
