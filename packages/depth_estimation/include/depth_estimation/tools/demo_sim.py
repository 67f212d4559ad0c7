"""``make demo DEMO_ARGS="--sim"``: the depth node on a simulated Duckietown drive, against its ground
truth.

``depth-sim2bag``'s library renders a lane drive on a test map (:data:`SIM_MAP`, never a training
map; obstacles added in its lanes, the DB21 lens, one randomized robot) with exact depth and obstacle
distance, and that robot's Duckietown calibration. The demo replays its camera stream through the node
with ``metric:=true`` and the simulated robot's extrinsic file, records ``~depth/metric`` and
``~obstacle_distance``, and compares them, stamp by stamp, with the ground truth: metric depth AbsRel
and delta1 (every pixel where both have a value, up to the node's ``metric_max_range``) and the
obstacle-distance metrics of :mod:`depth_estimation.evaluation.obstacle_eval`. The montage shows one
frame as camera | the node's metric depth | the ground truth, both as inverse depth on one fixed scale.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from depth_estimation.evaluation import metrics, obstacle_eval
from depth_estimation.evaluation.sim2bag import SimConfig, write_sim_bag
from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.framepath.params import read_param_file
from depth_estimation.io import bags
from depth_estimation.io.paths import PACKAGE_DIR
from depth_estimation.io.rgbd import stamp_ns

SIM_MAP = "MOOC_modcon"  # a test map of the Duckietown-sim benchmark
SIM_SEED = 1
OBSTACLE_DENSITY = 0.5
MONTAGE_INVERSE_DEPTH = (0.0, 5.0)  # 1/m: both depth tiles on this scale (near = bright)


def render_drive(work: str, veh: str, seconds: float, rate: float) -> Tuple[str, str]:
    """(bag with ground truth, extrinsic file) of a simulated drive of ``seconds`` at ``rate``."""
    config = SimConfig([SIM_MAP], max(1, int(seconds * rate)), SIM_SEED, veh, rate, "drive", domain_rand=True,
                       distortion=True, obstacle_density=OBSTACLE_DENSITY)
    bag, calibration = os.path.join(work, "sim_drive.bag"), os.path.join(work, "calibrations")
    summary = write_sim_bag(config, bag, force=True, jpeg=True, calibration_dir=calibration, progress=False)
    print("[demo] simulated drive on %s: %d frames rendered at %.1f frames/s (colour + depth), robot camera "
          "%.3f m up, %.1f deg down; obstacle ahead in %d frames"
          % (SIM_MAP, summary["frames"], summary["render_fps"], summary["camera"].height_m,
             summary["camera"].pitch_deg, summary["obstacle_frames"]), flush=True)
    return bag, os.path.join(calibration, "camera_extrinsic", "%s.yaml" % veh)


def node_arguments(extrinsics: str) -> List[str]:
    return ["metric:=true", "extrinsics_file:=" + extrinsics]


def recorded_topics(veh: str) -> List[str]:
    ns = "/%s/depth_node" % veh
    return [ns + "/depth/metric", ns + "/obstacle_distance"]


def _depth(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.step // 4)[:, :msg.width]


def _truth(sim_bag: str, veh: str, stamps) -> Tuple[Dict[int, np.ndarray], Dict[int, float]]:
    depth_topic = bags.rgbd_topics(veh)[1]
    range_topic = bags.obstacle_topics(veh)[0]
    depths, ranges = {}, {}
    for topic, _t, msg in bags.iter_messages(sim_bag, [depth_topic, range_topic]):
        if stamp_ns(msg) in stamps:
            if topic == depth_topic:
                depths[stamp_ns(msg)] = _depth(msg).copy()
            else:
                ranges[stamp_ns(msg)] = float(msg.range)
    return depths, ranges


def _metric_depth_record(pred: np.ndarray, gt: np.ndarray, max_range: float) -> Optional[Dict]:
    if pred.shape != gt.shape:
        import cv2  # only when the node's output size differs from the frame's

        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
    with np.errstate(invalid="ignore"):
        mask = metrics.valid_mask(gt, 1e-3, max_range) & np.isfinite(pred) & (pred > 0)
    return metrics.compute(pred, gt, mask) if mask.sum() >= 100 else None


def compare(outputs: str, sim_bag: str, veh: str) -> Tuple[Dict, Optional[Tuple[int, np.ndarray]]]:
    """(the ground-truth section of the report, (stamp, metric depth) of the montage frame)."""
    depth_topic, range_topic = recorded_topics(veh)
    info_topic = "/%s/depth_node/depth/camera_info" % veh  # one per depth frame, metric or not
    node_depth, node_range, answered = {}, {}, 0
    for topic, _t, msg in bags.iter_messages(outputs, [depth_topic, range_topic, info_topic]):
        if topic == depth_topic:
            node_depth[stamp_ns(msg)] = _depth(msg).copy()
        elif topic == range_topic:
            node_range[stamp_ns(msg)] = float(msg.range)
        else:
            answered += 1
    gt_depth, gt_range = _truth(sim_bag, veh, set(node_depth) | set(node_range))
    max_range = float(read_param_file(os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml"))
                      ["metric_max_range"])
    per_frame = [r for s in sorted(node_depth) if s in gt_depth
                 for r in [_metric_depth_record(node_depth[s], gt_depth[s], max_range)] if r is not None]
    distances = [{"obstacle_gt_m": obstacle_eval.none_if_inf(gt_range[s]),
                  "obstacle_pred_m": obstacle_eval.none_if_inf(node_range[s])}
                 for s in sorted(node_range) if s in gt_range]
    summary = obstacle_eval.summarize(distances)
    silent = max(0, answered - len(node_range))  # depth frames without metric output (state NONE)
    section = {"metric_depth_frames": len(per_frame),
               "metric_depth": metrics.mean_metrics(per_frame) if per_frame else None,
               "metric_max_range_m": max_range, "obstacle_distance": summary,
               "obstacle_distance_frames_without_output": silent}
    both = [s for s in sorted(node_depth) if s in gt_depth]
    near = [s for s in both if gt_range.get(s, math.inf) < 1.0]  # show an obstacle when there is one
    choice = near or both
    if not choice:
        return section, None
    pick = choice[len(choice) // 2]
    return section, (pick, node_depth[pick], gt_depth[pick])


def print_comparison(section: Dict) -> None:
    m, o = section["metric_depth"], section["obstacle_distance"]
    fmt = obstacle_eval.fmt
    print("\nAgainst the simulator's ground truth (%s, %d frames with metric depth)"
          % (SIM_MAP, section["metric_depth_frames"]))
    print("  metric depth AbsRel / delta1  %s / %s  (pixels up to %.0f m)"
          % (fmt(m and m["abs_rel"]), fmt(m and m["delta1"]), section["metric_max_range_m"]))
    print("  obstacle distance             median error %s m, within 10 %% %s, detected < 1 m %s "
          "(%d frames), false alarms %d of %d"
          % (fmt(o["distance_median_abs_error_m"]), fmt(o["distance_within_10pct"]),
             fmt(o["detection_rate_1m"]), o["near_frames"], o["false_alarms"], o["free_frames"]))


def write_montage(sim_bag: str, veh: str, frame, model: str, out: str, width: int = 426) -> bool:
    """camera | node metric depth | ground truth of ``frame`` = (stamp, metric depth, true depth)."""
    import cv2  # only for the montage

    from depth_estimation.framepath.frames import decode  # only for the montage

    if frame is None:
        return False
    stamp, pred, gt = frame
    camera = next((decode(bytes(msg.data), str(msg.format)) for _t, _r, msg in
                   bags.iter_messages(sim_bag, [bags.rgbd_topics(veh)[0]]) if stamp_ns(msg) == stamp), None)
    colorize = Colorizer("inferno", "fixed", vmin=MONTAGE_INVERSE_DEPTH[0], vmax=MONTAGE_INVERSE_DEPTH[1])
    if camera is None:
        return False
    tiles = [labelled_tile(camera, "camera (simulated)", width, small=True)]
    for depth, label in ((pred, "node metric depth: " + model), (gt, "ground truth")):
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, np.nan)
        image = np.where(np.isfinite(inverse)[..., None], colorize(inverse), 0).astype(np.uint8)
        tiles.append(labelled_tile(image, label, width, small=True))
    cv2.imwrite(out, np.hstack(tiles))
    return True


def labelled_tile(image: np.ndarray, label: str, width: int, small: bool = False) -> np.ndarray:
    """``image`` (BGR) resized to ``width``, ``label`` on a black bar at the top (both demo montages)."""
    import cv2  # only for the montage

    bar, x, y, scale = (24, 6, 17, 0.45) if small else (28, 8, 20, 0.6)
    image = cv2.resize(image, (width, int(round(image.shape[0] * width / image.shape[1]))),
                       interpolation=cv2.INTER_AREA)
    cv2.rectangle(image, (0, 0), (width, bar), (0, 0, 0), -1)
    cv2.putText(image, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image
