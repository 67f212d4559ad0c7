"""depth-sim-drive: the depth node's frame path driving a simulated Duckiebot up to an obstacle::

    depth-sim-drive --model fastdepth-duckietown [--backend B] [--map MOOC_modcon] [--obstacle duckie]
        [--runs 5] [--seed 0] [--json out.json] [--video out.mp4]
    depth-sim-drive --model fastdepth-duckietown --obstacle none --runs 6 --max-seconds 90   # clear lane

Each run puts the robot on a random lane pose of ``--map`` (Duckietown's simulator, duckietown-gym-daffy,
headless) and one ``--obstacle`` on its lane ``--approach-m`` metres ahead (along the path the lane
follower will take). The robot follows its lane (pure pursuit on the simulator's lane curves). Every
camera frame the node would take goes through the node's own frame path: JPEG -> decode -> network
(:class:`~depth_estimation.framepath.pipeline.DepthPipeline`) -> metric alignment with the simulated
robot's calibration, obstacle distance and virtual stop line
(:class:`~depth_estimation.framepath.metric.MetricOutputs`), with the node's ``default.yaml``
parameters. At the node's real rate: simulated time advances by the measured wall time of that work,
and the camera frames that arrive meanwhile are dropped, as on the robot (``--model oracle``: the
exact depth as a relative disparity instead of a network, everything else the same). The speed
follows the last stop-line reading as dt-core's ``lane_controller_node`` (daffy) uses it
(:func:`~depth_estimation.framepath.stop_line.stop_speed`: v_bar 0.19 m/s, slowdown from 0.6 to
0.15 m, x0.25 while an obstacle is detected, 0 at the line). A run ends with a stop (held 2 s, near
the obstacle), a contact (the simulator's collision check), or after ``--max-seconds``.
``--obstacle none`` places nothing: each run drives its lane for ``--max-seconds`` (outcome ``clear``,
unless it collides), the measure of false stops per 100 m of clear lane (0.19 m/s: ~17 m per 90 s
run; a false stop that never clears holds the robot, as it would on the road).

Report (:mod:`depth_estimation.evaluation.sim_drive_report`): per run the outcome, the true distance
at the stop (the node's corridor distance on the exact depth) against ``virtual_stop_line_offset``,
the false stops (a stop while nothing is truly within ``offset + FALSE_STOP_MARGIN_M``) and the
metres driven on a clear lane (no obstacle truly in the corridor), the node's rate; a video of
camera | metric depth with the stop line drawn.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from depth_estimation import options
from depth_estimation.evaluation import sim_drive_report as report
from depth_estimation.evaluation.sim2bag import _scalar, write_calibration
from depth_estimation.evaluation.sim_display import SimUnavailable, ensure_display, import_simulator
from depth_estimation.evaluation.sim_render import SimCamera, SimRenderer
from depth_estimation.evaluation.sim_world import (NODE_DEFAULTS, PoseSampler, _dir, _heading, _wrap,
                                                   node_obstacle_params, obstacle_distance_gt, place_obstacle)
from depth_estimation.framepath import frames
from depth_estimation.framepath.metric import MetricOptions, MetricOutputs
from depth_estimation.framepath.params import check_params, read_param_file
from depth_estimation.framepath.pipeline import start_pipeline
from depth_estimation.io.atomic import output_problem
from depth_estimation.framepath.stop_line import stop_speed
from depth_estimation.geometry.camera import FrameRays

OBSTACLES = ("duckie", "duckiebot", "cone")
NO_OBSTACLE = "none"  # --obstacle none: a clear-lane drive
ORACLE = "oracle"
V_BAR, SLOWDOWN = 0.19, (0.6, 0.15)  # dt-core daffy lane_controller_node default.yaml
OBSTACLE_FACTOR = 0.25  # lane_controller_node: v and omega x0.25 while an obstacle stop line is detected
LOOKAHEAD_M, MAX_TURN_RATE = 0.25, 2.5  # the lane follower (as sim_world.Drive)
STOP_HOLD_S = 2.0  # a stop counts once the robot stood this long
FALSE_STOP_MARGIN_M = 0.3  # a stop with nothing truly within offset + this is a false stop
PHYSICS_DT = 1.0 / 60.0
VEH = "simbot"


@dataclass
class DriveConfig:
    model: str
    backend: str = "auto"
    input_size: Optional[int] = None
    map_name: str = "MOOC_modcon"
    obstacle: str = "duckie"
    runs: int = 5
    seed: int = 0
    approach_m: float = 2.5
    max_seconds: float = 90.0
    camera_hz: float = 30.0
    width: int = 640
    height: int = 480
    v_bar: float = V_BAR
    obstacle_factor: float = OBSTACLE_FACTOR


def follow(sampler: PoseSampler, pos: np.ndarray, angle: float, v: float, dt: float):
    """The lane follower's next pose after ``dt`` s at ``v`` m/s: (pos, angle, valid); valid False when
    the simulator refuses the pose (a collision, or off the road)."""
    point, tangent = sampler.sim.closest_curve_point(pos, angle)
    if point is None or tangent is None:
        return pos, angle, False
    tangent = np.asarray(tangent, np.float64) / max(1e-9, float(np.linalg.norm(tangent)))
    target = np.asarray(point, np.float64) + LOOKAHEAD_M * tangent
    turn = _wrap(_heading(target - pos) - angle)
    limit = MAX_TURN_RATE * dt * (1.0 if v > 0 else 0.0)
    angle = angle + max(-limit, min(limit, turn))
    pos = pos + v * dt * _dir(angle)
    return pos, angle, bool(sampler.valid(pos, angle))


def point_ahead(sampler: PoseSampler, pos: np.ndarray, angle: float, metres: float) -> Optional[np.ndarray]:
    """Where the lane follower is after ``metres`` of its path (None when it cannot get there)."""
    step, done = 0.01, 0.0
    while done < metres:
        point, tangent = sampler.sim.closest_curve_point(pos, angle)
        if point is None:
            return None
        pos, angle, _valid = follow(sampler, pos, angle, 1.0, step)
        done += step
    point, _tangent = sampler.sim.closest_curve_point(pos, angle)
    return None if point is None else np.asarray(point, np.float64)


def node_params(config: DriveConfig, extrinsics: str) -> Dict[str, Any]:
    raw = read_param_file(NODE_DEFAULTS)
    raw.update(model=config.model if config.model != ORACLE else "random:fastdepth-mnv3",
               backend=config.backend, metric=True, extrinsics_file=extrinsics, tof_topic="",
               expected_frame_size=[config.width, config.height])
    raw["input_size"] = config.input_size or 0
    return check_params(raw)


def camera_info(camera: SimCamera) -> Any:
    k = camera.intrinsics()
    K = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    return types.SimpleNamespace(width=k.width, height=k.height, distortion_model="plumb_bob", K=K,
                                 D=list(k.D), R=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                                 P=[k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def oracle_disparity(depth: np.ndarray) -> np.ndarray:
    """A perfect relative model: the true disparity under an affine map the node does not know (the
    simulator's 0, the sky beyond its range, as the farthest)."""
    valid = depth > 0
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    inverse[~valid] = inverse[valid].min() if valid.any() else 0.0
    return (0.37 * inverse + 0.8).astype(np.float32)


class FramePath:
    """The node's work on one camera frame: (depth, MetricProducts or None, wall seconds)."""

    def __init__(self, config: DriveConfig, camera: SimCamera, calib_dir: str):
        _intrinsic, extrinsic = write_calibration(calib_dir, VEH, camera)
        self.params = node_params(config, extrinsic)
        self.oracle = config.model == ORACLE
        self.pipeline = None if self.oracle else start_pipeline(self.params)[0]
        self.metric = MetricOutputs(MetricOptions.from_params(self.params), VEH)
        self.info = camera_info(camera)
        self.name = ORACLE if self.oracle else self.pipeline.estimator.name
        self.backend = "none" if self.oracle else self.pipeline.estimator.backend

    def __call__(self, rgb: np.ndarray, depth_gt: np.ndarray, stamp: float):
        start = time.perf_counter()
        if self.oracle:
            disparity = oracle_disparity(depth_gt)
        else:
            jpeg = frames.encode_jpeg(np.ascontiguousarray(rgb[:, :, ::-1]), 95)  # as the camera sends it
            disparity = self.pipeline.process(jpeg, "jpeg", colorized=False, jpeg=False).depth
        out = self.metric.process(disparity, stamp, self.info)
        return disparity, out, time.perf_counter() - start


def open_map(config: DriveConfig, run: int):
    simulator = import_simulator()
    try:
        sim = simulator.Simulator(map_name=config.map_name, seed=int(config.seed) * 1000 + run,
                                  domain_rand=False, camera_width=config.width, camera_height=config.height,
                                  distortion=False, camera_rand=False)
    except Exception as exc:  # the simulator raises bare Exceptions (unknown map, ...)
        raise ValueError("cannot open map %r: %s" % (config.map_name, str(exc).splitlines()[0] if str(exc)
                                                     else type(exc).__name__)) from None
    camera = SimCamera(height_m=_scalar(sim.cam_height), pitch_deg=_scalar(sim.cam_angle[0]),
                       fov_y_deg=_scalar(sim.cam_fov_y), width=config.width, height=config.height)
    return sim, camera


def start_pose(sampler: PoseSampler, config: DriveConfig):
    """A lane pose with the obstacle placed ``approach_m`` ahead on its path (sampled until one fits;
    with ``--obstacle none`` the same lane pose and nothing placed)."""
    for _ in range(50):
        pos, angle = sampler.random_pose()
        lane = sampler.lane_heading(pos, angle)
        point, _t = sampler.sim.closest_curve_point(pos, angle)
        pos, angle = np.asarray(point, np.float64), lane  # on the lane's centre line, along it
        at = point_ahead(sampler, pos, angle, config.approach_m)
        if at is not None and sampler.valid(pos, angle):
            if config.obstacle != NO_OBSTACLE:
                place_obstacle(sampler.sim, config.obstacle, at, float(sampler.rng.uniform(0, 360)))
            if sampler.valid(pos, angle):
                return pos, angle
    raise ValueError("no lane pose with %.1f m of lane ahead on map %r"
                     % (config.approach_m, config.map_name))


def drive_run(config: DriveConfig, run: int, video: Optional[report.VideoWriter]) -> Dict[str, Any]:
    """One approach (see the module docstring): the run's record for the report."""
    sim, camera = open_map(config, run)
    sampler = PoseSampler(sim, np.random.default_rng([int(config.seed), run]))
    pos, angle = start_pose(sampler, config)
    renderer, rays = SimRenderer(sim, camera), FrameRays(camera.intrinsics())
    plane, gt_params = camera.plane(), node_obstacle_params()
    with tempfile.TemporaryDirectory() as calib:
        path = FramePath(config, camera, calib)
    offset = path.params["virtual_stop_line_offset"]
    rec = report.RunRecord(run, offset, FALSE_STOP_MARGIN_M, config.obstacle)
    t, reading, stopped_since, period = 0.0, None, None, 1.0 / config.camera_hz
    while t < config.max_seconds:
        rgb, depth = renderer.render(pos, angle)
        truth = obstacle_distance_gt(depth, plane, rays, gt_params)
        _disparity, out, wall = path(rgb, depth, t)
        if out is not None and out.stop_line is not None:
            reading = out.stop_line
        rec.frame(wall, out, truth)
        if video is not None:
            video.write(rgb, out, reading, truth, camera.intrinsics(), plane, offset, t)
        v = stop_speed(reading, config.v_bar, SLOWDOWN[0], SLOWDOWN[1], config.obstacle_factor)
        if v == 0.0 and stopped_since is None:
            stopped_since = t
            rec.stop(truth)
        stopped_since = stopped_since if v == 0.0 else None
        if stopped_since is not None and t - stopped_since >= STOP_HOLD_S and rec.near(truth):
            return rec.finish("stopped", truth, t)
        frames_taken = max(1, math.ceil(wall / period))  # the camera frames that came during the work
        for _ in range(int(round(frames_taken * period / PHYSICS_DT))):
            new_pos, new_angle, valid = follow(sampler, pos, angle, v, PHYSICS_DT)
            if not valid and v > 0:
                return rec.finish("contact", truth, t)
            rec.moved(float(np.linalg.norm(new_pos - pos)), truth)
            pos, angle = new_pos, new_angle
        t += frames_taken * period
    return rec.finish("timeout" if config.obstacle != NO_OBSTACLE else "clear", truth, t)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_model(parser, help="model spec or folder, or 'oracle' (the exact depth, no network)")
    options.add_runtime(parser, device=False, threads=False)
    parser.add_argument("--map", default="MOOC_modcon",
                        help="simulator map (default MOOC_modcon, a test map)")
    parser.add_argument("--obstacle", choices=OBSTACLES + (NO_OBSTACLE,), default="duckie",
                        help="what stands on the lane; 'none': a clear lane, for false stops per 100 m")
    parser.add_argument("--runs", type=options.count(1), default=5, help="approaches (default 5)")
    parser.add_argument("--seed", type=int, default=0,
                        help="same seed and arguments = same poses (default 0)")
    parser.add_argument("--approach-m", type=float, default=2.5,
                        help="obstacle this far ahead along the lane (default 2.5)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="simulated seconds per run at most")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--v-bar", type=float, default=V_BAR, help="nominal speed (dt-core: 0.19 m/s)")
    parser.add_argument("--obstacle-factor", type=float, default=OBSTACLE_FACTOR,
                        help="speed factor while an obstacle is detected (dt-core: 0.25)")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--video", default=None, help="write camera | metric depth with the stop line (.mp4)")


def main(argv: Optional[Sequence[str]] = None) -> int:  # console script depth-sim-drive
    parser = argparse.ArgumentParser(prog="depth-sim-drive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = DriveConfig(args.model, args.backend, options.input_size_value(args.input_size), args.map,
                         args.obstacle, args.runs, args.seed, args.approach_m, args.max_seconds, 30.0,
                         args.width, args.height, args.v_bar, args.obstacle_factor)
    problems = [output_problem(path) for path in (args.json, args.video) if path]
    if any(problems):  # before the simulator starts
        print("\n".join("depth-sim-drive: %s" % p for p in problems if p), file=sys.stderr)
        return 2
    try:
        ensure_display()
        video = report.VideoWriter(args.video) if args.video else None
        runs: List[Dict[str, Any]] = []
        for run in range(config.runs):
            runs.append(drive_run(config, run, video))
            print(report.run_line(runs[-1]), flush=True)
        if video is not None:
            video.close()
    except (SimUnavailable, ValueError, OSError) as exc:
        print("depth-sim-drive: %s" % exc)
        return 2
    result = report.build(vars(args), runs)
    print(report.summary_text(result))
    if args.json:
        report.write(args.json, result)
    return 0


__all__ = ["DriveConfig", "drive_run", "main"]
