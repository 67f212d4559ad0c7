"""The student on real Duckiebot frames (no ground truth): does its depth still fit the road plane?

For each model and each real 640x480 DB21 frame, the prediction is fitted to the ground plane of a
real DB21 calibration (``assets/calibrations/csc22917``: the frames come from other robots of the
same model, so the plane is approximate) exactly as ``depth-eval --align ground`` and the node do;
the table gives the confident fits and the ground inlier share, and ``--figure`` draws camera |
relative disparity | metres for every frame of the first model.

    python3 docs/student/real_frames.py --frames '../shared/data/real/duckiebot_frames/*.jpg' \\
        --models fastdepth-duckietown,random:fastdepth-mnv3 --figure docs/student/real_frames.jpg
"""
import argparse
import glob
import json
import os
import sys

import cv2
import numpy as np

from depth_estimation.evaluation.ground_align import GroundScorer
from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.geometry.camera import read_intrinsics
from depth_estimation.io.paths import ASSETS_DIR
from depth_estimation.runtime.estimator import DepthEstimator

CALIBRATION = os.path.join(ASSETS_DIR, "calibrations", "csc22917")
MAX_DEPTH = 3.0  # metres shown in the figure (red = near)


def _row(rgb, disparity, depth, width=320):
    h = int(round(rgb.shape[0] * width / rgb.shape[1]))
    tiles = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), Colorizer()(disparity)]
    metric = np.zeros(rgb.shape, np.uint8)
    if depth is not None:
        near = np.where(np.isfinite(depth), 1.0 / np.clip(depth, 0.05, MAX_DEPTH), 0).astype(np.float32)
        metric = Colorizer()(near)
    tiles.append(metric)
    return np.concatenate([cv2.resize(t, (width, h), interpolation=cv2.INTER_AREA) for t in tiles], axis=1)


def run_model(model, paths, figure=None):
    scorer = GroundScorer(read_intrinsics(os.path.join(CALIBRATION, "intrinsic.yaml")),
                          extrinsics=os.path.join(CALIBRATION, "extrinsic.yaml"))
    est = DepthEstimator(model, input_size=None, backend="onnxruntime" if model.endswith(".onnx") else "torch")
    est.load()
    rows, records = [], []
    for index, path in enumerate(paths):
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        disparity = est.infer(rgb)
        depth, record = scorer.metric(index, disparity, "disparity")
        record["frame"] = os.path.basename(path)
        records.append(record)
        rows.append(_row(rgb, disparity, depth))
    if figure:
        cv2.imwrite(figure, np.concatenate(rows, axis=0), [cv2.IMWRITE_JPEG_QUALITY, 80])
    shares = [r["ground_inlier_share"] for r in records]
    return {"model": model, "frames": len(paths), "confident": int(sum(r["ground_ok"] for r in records)),
            "median_inlier_share": float(np.median(shares)), "per_frame": records}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", required=True, help="glob of real camera frames")
    parser.add_argument("--models", default="fastdepth-duckietown,random:fastdepth-mnv3")
    parser.add_argument("--figure", help="camera | disparity | metres of the first model, all frames")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(os.path.expanduser(args.frames)))
    if not paths:
        print("error: no frames match %s" % args.frames, file=sys.stderr)
        return 1
    results = []
    for i, model in enumerate(m for m in args.models.split(",") if m):
        results.append(run_model(model, paths, args.figure if i == 0 else None))
        r = results[-1]
        print("%-28s confident ground fits %2d / %d, median ground inlier share %.2f"
              % (r["model"], r["confident"], r["frames"], r["median_inlier_share"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
