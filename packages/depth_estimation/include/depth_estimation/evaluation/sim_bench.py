"""The Duckietown-sim benchmark: models on simulated test maps, relative depth, obstacle pixels and
obstacle distance, as one table::

    python3 -m depth_estimation.evaluation.sim_bench --bags test/robotarium2.bag,test/MOOC_modcon.bag \\
        --models random:fastdepth-mnv3,random:da2-small,road-plane --out sim_bench/ [--threads N]

Each bag ``DIR/<map>.bag`` comes with its robot's calibration in ``DIR/calib_<map>/`` (as
``depth-sim2bag --calibration-dir`` writes it). Per model and bag: the model's raw outputs are saved
once (``OUT/predictions/<model>/<map>/``), then scored twice with ``depth-eval``'s code: **relative**
(``--align lsq-disparity``, the usual protocol, scale and shift from the ground truth) and **metric**
(``--align ground --extrinsics``: scale from the road alone, as the robot gets it), which adds the
obstacle-pixel and obstacle-distance metrics (:mod:`depth_estimation.evaluation.obstacle_eval`).
Over all bags: relative metrics are the frame-weighted mean, obstacle metrics are pooled over every
frame. ``road-plane`` is the baseline that predicts the calibrated road plane everywhere (the sky and
the horizon: the far limit); it scores well wherever the road fills the frame, and shows what a
full-frame score hides. Writes ``OUT/sim_bench.json`` and ``OUT/sim_bench.md`` (the README table).

The split (nothing trained in this project may see a test map): :data:`TRAIN_MAPS`, :data:`TEST_MAPS`.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from depth_estimation import options
from depth_estimation.evaluation import evaluate as depth_eval
from depth_estimation.evaluation import ground_align, metrics, obstacle_eval
from depth_estimation.evaluation.obstacle_eval import fmt
from depth_estimation.geometry.calibration import ground_plane, read_extrinsics
from depth_estimation.geometry import ground as ground_fit
from depth_estimation.geometry.ground import ground_depth_map
from depth_estimation.io import rgbd
from depth_estimation.io.atomic import atomic_file, output_problem, write_json

TRAIN_MAPS = ("loop_obstacles", "loop_dyn_duckiebots", "zigzag_dists", "udem1", "4way", "small_loop",
              "ETH_small_loop_1", "loop_empty", "straight_road", "TTIC_large_loop")
TEST_MAPS = ("robotarium2", "ETHZ_autolab_technical_track", "MOOC_modcon")
ROAD_PLANE = "road-plane"


def calibration_of(bag: str, veh: str = "simbot") -> str:
    """The extrinsic file beside a simulated bag: ``DIR/calib_<map>/camera_extrinsic/<veh>.yaml``."""
    folder, name = os.path.split(os.path.abspath(bag))
    path = os.path.join(folder, "calib_" + os.path.splitext(name)[0], "camera_extrinsic", "%s.yaml" % veh)
    if not os.path.isfile(path):
        raise FileNotFoundError("no calibration beside %s: %s (depth-sim2bag --calibration-dir writes it)"
                                % (bag, path))
    return path


def road_plane_predictions(bag: str, extrinsics: str, out_dir: str, stride: int = 1) -> int:
    """Write the road-plane baseline's disparity (1 / ground depth; 0 = infinitely far at and above the
    horizon) for every paired frame of ``bag`` as ``out_dir/000000.npy``...; returns the count."""
    image_topic, depth_topic = rgbd.detect_topics(bag)
    intrinsics, _topic = ground_align.bag_intrinsics(bag, image_topic)
    plane = ground_plane(read_extrinsics(extrinsics), intrinsics)
    unmatched = {"images": [], "depths": []}  # type: Dict[str, List[int]]
    count, maps = 0, {}  # type: int, Dict[Tuple[int, int], np.ndarray]
    pairs = itertools.islice(rgbd.paired_frames(bag, image_topic, depth_topic, unmatched), 0, None,
                             max(1, stride))
    for count, (_stamp, _image, depth_msg) in enumerate(pairs, 1):
        size = (int(depth_msg.height), int(depth_msg.width))
        if size not in maps:  # one ground map per frame size
            ground = ground_depth_map(plane, intrinsics.for_frame(*size), *size)
            with np.errstate(divide="ignore", invalid="ignore"):
                maps[size] = np.where(np.isfinite(ground), 1.0 / ground, 0.0).astype(np.float32)
        disparity = maps[size]
        with atomic_file(os.path.join(out_dir, "%06d.npy" % (count - 1)), "wb") as f:
            np.save(f, disparity)
    return count


def _predictions(model: str, bag: str, extrinsics: str, out_dir: str, estimator_args: dict,
                 stride: int) -> str:
    """The folder of ``model``'s raw outputs on ``bag`` (computed once)."""
    if os.path.isfile(os.path.join(out_dir, "000000.npy")):
        return out_dir
    os.makedirs(out_dir, exist_ok=True)
    if model == ROAD_PLANE:
        road_plane_predictions(bag, extrinsics, out_dir, stride)
        return out_dir
    from depth_estimation.runtime.estimator import DepthEstimator  # lazy: the baseline needs no runtime

    estimator = DepthEstimator(**dict(estimator_args, model=model)).load()
    depth_eval.evaluate(bag, "lsq-disparity", estimator=estimator, save_predictions=out_dir, stride=stride)
    return out_dir


def predictions_name(bag: str, stride: int = 1) -> str:
    """The folder of ``bag``'s saved outputs inside ``<out>/predictions/<model>/``."""
    return os.path.splitext(os.path.basename(bag))[0] + ("_every%d" % stride if stride > 1 else "")


def ground_arguments(bag: str) -> Dict:
    """The benchmark's ``--align ground`` settings for ``bag`` (its calibration, the default fit):
    the keyword arguments of :func:`~depth_estimation.evaluation.ground_align.make_scorer`."""
    return {"extrinsics": calibration_of(bag), "plane_hpr": None,
            "threshold": ground_fit.FitOptions.threshold,
            "min_inlier_share": ground_fit.FitOptions.min_inlier_share,
            "max_range_m": ground_fit.DEFAULT_MAX_RANGE_M}


def bench_bag(model: str, bag: str, out: str, estimator_args: dict, stride: int = 1) -> Dict:
    """Relative and metric (ground-aligned, obstacles) results of ``model`` on one bag."""
    ground = ground_arguments(bag)
    folder = os.path.join(out, "predictions", model.replace(":", "_").replace("/", "_"),
                          predictions_name(bag, stride))
    preds = _predictions(model, bag, ground["extrinsics"], folder, estimator_args, stride)
    relative = depth_eval.evaluate(bag, "lsq-disparity", predictions=preds, stride=stride)
    try:
        metric = depth_eval.evaluate(bag, ground_align.GROUND, predictions=preds, ground=ground,
                                     stride=stride)
    except ValueError as exc:  # no confident ground fit in any frame
        metric = {"error": str(exc), "per_frame": [], "frames": 0, "ground": {"confident_share": 0.0}}
    return {"bag": bag, "relative": relative, "metric": metric}


def combine(runs: Sequence[Dict]) -> Dict:
    """One model's numbers over all its bags (see the module docstring)."""
    rel_frames = [r for run in runs for r in run["relative"]["per_frame"]]
    met_frames = [r for run in runs for r in run["metric"]["per_frame"]]
    fitted = sum(run["metric"].get("ground", {}).get("frames_fitted", 0) for run in runs)
    return {"frames": len(rel_frames), "relative": metrics.mean_metrics(rel_frames),
            "metric": metrics.mean_metrics(met_frames) if met_frames else None,
            "confident_share": len(met_frames) / float(fitted) if fitted else 0.0,
            "obstacles": obstacle_eval.summarize(met_frames)}


def markdown(results: Dict[str, Dict]) -> str:
    """The README table: one row per model."""
    lines = ["| model | frames | relative AbsRel | relative delta1 | metric AbsRel (ground) | "
             "confident fits | obstacle-pixel AbsRel | obstacle-pixel delta1 | distance median error (m) | "
             "within 10 % | detected < 1 m | false alarms |", "|" + " --- |" * 12]
    for model, r in results.items():
        o, m = r["obstacles"], r["metric"] or {}
        lines.append("| `%s` | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d of %d |" % (
            model, r["frames"], fmt(r["relative"]["abs_rel"]), fmt(r["relative"]["delta1"]),
            fmt(m.get("abs_rel")), fmt(r["confident_share"], "%.2f"), fmt(o["obstacle_abs_rel"]),
            fmt(o["obstacle_delta1"]), fmt(o["distance_median_abs_error_m"]),
            fmt(o["distance_within_10pct"], "%.2f"),
            fmt(o["detection_rate_1m"], "%.2f"), o["false_alarms"], o["free_frames"]))
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.evaluation.sim_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bags", required=True, type=options.comma_list, help="simulated test bags")
    parser.add_argument("--models", required=True, type=options.comma_list,
                        help="model specs, and %s for the baseline" % ROAD_PLANE)
    parser.add_argument("--out", required=True,
                        help="folder for predictions, sim_bench.json and sim_bench.md")
    parser.add_argument("--stride", type=int, default=1, metavar="N",
                        help="every N-th frame of each bag (the same frames for every model; default 1: all)")
    options.add_runtime(parser)
    args = parser.parse_args(argv)
    problem = output_problem(args.out, folder=True)
    if problem:  # before any model runs
        print("error: %s" % problem, file=sys.stderr)
        return 2
    estimator_args = options.estimator_kwargs(args, model="")
    try:
        results = {}
        for model in args.models:
            runs = [bench_bag(model, bag, args.out, estimator_args, args.stride) for bag in args.bags]
            per_bag = [{"bag": r["bag"], "relative": r["relative"]["metrics"],
                        "metric": r["metric"].get("metrics"), "obstacles": r["metric"].get("obstacles")}
                       for r in runs]
            results[model] = dict(combine(runs), bags=per_bag)
            print("%s: %s" % (model, obstacle_eval.summary_line(results[model]["obstacles"])))
    except (OSError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    write_json(os.path.join(args.out, "sim_bench.json"), {"bags": args.bags, "stride": args.stride,
                                                          "runtime": estimator_args, "models": results})
    table = markdown(results)
    with atomic_file(os.path.join(args.out, "sim_bench.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
