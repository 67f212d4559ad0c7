#!/usr/bin/env python3
"""Where a model's obstacle-pixel error comes from, on the simulated test bags of the benchmark.

    python3 -m depth_estimation.evaluation.sim_bench --bags A.bag,B.bag --models fastdepth-duckietown --out bench/
    python3 docs/student/obstacle_errors.py --predictions bench/predictions/fastdepth-duckietown --bags A.bag,B.bag

Reads the raw outputs ``sim_bench`` saved (``--stride`` as it was run), makes them metric exactly as the
benchmark does (the ground fit of ``--align ground``), and splits the obstacle pixels (the bags'
obstacle masks: everything more than 1 cm above the road) into the *boundary* (within 3 pixels of
the mask's edge at the bag's resolution) and the *interior*, and by true distance: AbsRel, delta1,
the per-frame median predicted / true depth, and how many pixels are read more than 1.25x too far
or too near. The road (ground-truth points within 5 mm of the ground plane, off the masks) is
shown by distance beside them: a scale error would move both, an obstacle error only the obstacles.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import os
import sys

import cv2
import numpy as np

from depth_estimation import options
from depth_estimation.evaluation import ground_align, obstacle_eval, sim_bench
from depth_estimation.evaluation.sim_world import heights_above_ground
from depth_estimation.geometry.camera import FrameRays
from depth_estimation.io.rgbd import depth_from_msg, detect_topics, paired_frames

BINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 10.0))
ROAD_M = 0.005
DEPTH_RANGE = (1e-3, 10.0)  # the benchmark's (depth-eval's --min-depth / --max-depth defaults)


def _bin(d: float) -> str:
    return next(("%.1f-%.1f m" % b for b in BINS if b[0] <= d < b[1]), "other")


def frames(predictions: str, bag: str, stride: int):
    """(metric prediction, ground truth, obstacle mask, ground-truth heights) of every confidently
    fitted frame of ``bag``."""
    folder = os.path.join(predictions, sim_bench.predictions_name(bag, stride))
    image_topic, depth_topic = detect_topics(bag)
    scorer = ground_align.make_scorer(bag, image_topic, **sim_bench.ground_arguments(bag))
    truth = obstacle_eval.ObstacleTruth.from_bag(bag, depth_topic)
    rays = None
    pairs = itertools.islice(paired_frames(bag, image_topic, depth_topic, {"images": [], "depths": []}),
                             0, None, stride)
    for index, (stamp, _image, depth_msg) in enumerate(pairs):
        pred = np.load(os.path.join(folder, "%06d.npy" % index)).astype(np.float32)
        metric, _record = scorer.metric(index, pred, "disparity")
        mask = truth.mask(stamp) if truth is not None else None
        if metric is None or mask is None:
            continue
        gt = depth_from_msg(depth_msg)
        rays = rays or FrameRays(scorer.intrinsics.for_frame(*gt.shape))
        yield metric, gt, mask, heights_above_ground(gt, scorer.plane, rays)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="sim_bench's predictions/<model> folder")
    parser.add_argument("--bags", required=True, type=options.comma_list, help="the bags sim_bench ran on")
    parser.add_argument("--stride", type=int, default=1, help="sim_bench's --stride (default 1)")
    args = parser.parse_args(argv)
    try:
        return report(args.predictions, args.bags, args.stride)
    except (OSError, ValueError) as exc:  # a wrong folder or bag: one line, no traceback
        print("error: %s (run sim_bench on these bags first; --stride as it ran)" % exc, file=sys.stderr)
        return 1


def report(predictions: str, bags, stride: int) -> int:
    pixels = collections.defaultdict(lambda: np.zeros(5))  # n, sum |r - 1|, delta1 hits, too far, too near
    medians = collections.defaultdict(list)
    kernel = np.ones((7, 7), np.uint8)
    lo, hi = DEPTH_RANGE
    for bag in bags:
        for metric, gt, mask, height in frames(predictions, bag, stride):
            scored = np.isfinite(metric) & (gt >= lo) & (gt <= hi)
            interior = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
            road = scored & ~mask & (np.abs(height) < ROAD_M)
            for where, sel in (("interior", mask & interior), ("boundary", mask & ~interior)):
                record = obstacle_eval.pixel_record(metric, gt, sel, DEPTH_RANGE)  # the benchmark's sums
                if not record["obstacle_pixels"]:
                    continue
                sel = sel & scored
                ratio = np.clip(metric[sel], lo, hi) / gt[sel]
                sums = (ratio.size, record["obstacle_abs_rel_sum"], record["obstacle_delta1_hits"],
                        (ratio > obstacle_eval.DELTA1).sum(), (ratio < 1 / obstacle_eval.DELTA1).sum())
                for key in ((where, "all"), (where, _bin(float(np.median(gt[sel]))))):
                    pixels[key] += sums
                    medians[key].append(float(np.median(ratio)))
            for near_m, far_m in BINS:
                for where, sel in (("road", road), ("obstacles", mask & scored)):
                    sel = sel & (gt >= near_m) & (gt < far_m)
                    if sel.sum() > 50:
                        medians[(where + " by distance", "%.1f-%.1f m" % (near_m, far_m))].append(
                            float(np.median(metric[sel] / gt[sel])))
    if not medians:
        print("error: no confidently fitted frame with an obstacle mask", file=sys.stderr)
        return 1
    for key in sorted(pixels):
        n, rel, hits, far, near = pixels[key]
        print("%-8s %-9s pixels %8d  AbsRel %.3f  delta1 %.3f  too far %5.1f %%  too near %5.1f %%  "
              "median ratio %.3f (%d frames)" % (key[0], key[1], n, rel / n, hits / n, 100 * far / n,
                                                100 * near / n, np.median(medians[key]), len(medians[key])))
    for key in sorted(k for k in medians if k[0].endswith("by distance")):
        print("%-22s %-9s median predicted / true %.3f (%d frames)"
              % (key[0], key[1], np.median(medians[key]), len(medians[key])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
