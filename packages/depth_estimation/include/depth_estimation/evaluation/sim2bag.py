"""depth-sim2bag: Duckietown's simulator -> RGB-D bags with exact depth, obstacle ground truth and the
simulated robot's calibration (console name ``depth-sim2bag``)::

    depth-sim2bag --out sim.bag --maps loop_obstacles[,udem1...] --frames 300 [--seed 0] \\
        [--veh simbot] [--hz 30] [--mode drive|random|mixed] [--domain-rand] [--distortion] \\
        [--calibration-dir DIR] [--obstacle-density D] [--jpeg] [--force]

The bag has the layout of the other converters (:mod:`depth_estimation.evaluation.convert_rgbd`),
in namespace ``--veh``, frames ``1 / --hz`` s apart: ``/<veh>/camera_node/image/compressed`` (PNG, or
JPEG quality 95 with ``--jpeg``, as the robot's camera sends), ``/<veh>/depth_gt/image_raw`` (32FC1
metres along the optical axis, 0 = none: sky, beyond ``--max-depth``), ``/<veh>/camera_node/
camera_info`` (the simulated camera, with its distortion), ``/<veh>/dataset`` = ``duckietown-sim``,
and the obstacle ground truth: ``/<veh>/obstacle_gt`` (sensor_msgs/Range: the closest obstacle in the
node's corridor, +inf when none, :mod:`depth_estimation.evaluation.sim_world`) and
``/<veh>/depth_gt/obstacle_mask`` (mono8, 255 = object). The DB21M's front time-of-flight sensor is
simulated as Duckietown's driver publishes it (:mod:`depth_estimation.geometry.tof`):
``/<veh>/front_center_tof_driver_node/range`` at 15 Hz (stamps k / 15 s; each reading from the
latest frame's exact depth), frame ``<veh>/tof/front_center``, the raw reading (8.19 m when it sees
nothing), mounted on the simulated robot as on a DB21M relative to its camera.

``--frames`` is the total, split evenly over ``--maps`` (rendered one after the other). One bag is
one robot: its camera (height, tilt, field of view) is the simulator's nominal one, or with
``--domain-rand`` drawn once per bag from the simulator's randomization ranges, while the appearance
(lighting, colours, textures, horizon, optional objects) is drawn again every episode
(``--episode-frames``). ``--calibration-dir`` receives that robot's Duckietown calibration,
``camera_intrinsic/<veh>.yaml`` (ROS camera_info YAML) and ``camera_extrinsic/<veh>.yaml`` (the daffy
homography from rectified pixels to the ground, origin at the robot's origin), so ``depth-eval
--align ground --extrinsics`` and the node's ``metric:=true`` take the simulated robot like a real
one. The same arguments give the same bag. Rendering needs an X display with OpenGL: without one
a private ``Xvfb`` is started (:mod:`depth_estimation.evaluation.sim_display`). Frames are rendered
by Duckietown's simulator (duckietown-gym-daffy); its maps, textures and meshes are Duckietown's.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from depth_estimation import options
from depth_estimation.evaluation.convert_rgbd import DEFAULT_START, encode_rgb, progress_bar
from depth_estimation.evaluation.sim_display import SimUnavailable, ensure_display, import_simulator
from depth_estimation.evaluation.sim_render import SimCamera, SimRenderer
from depth_estimation.evaluation.sim_world import (MODES, PoseSampler, add_obstacles, node_obstacle_params,
                                                   obstacle_distance_gt, obstacle_mask, poses)
from depth_estimation.geometry.calibration import homography_from_plane, write_extrinsics
from depth_estimation.geometry import tof
from depth_estimation.geometry.camera import FrameRays, Intrinsics
from depth_estimation.io.atomic import atomic_file
from depth_estimation.io.bags import (DEPTH_TYPE, IMAGE_TYPE, INFO_TYPE, RANGE_TYPE, SIM_DATASET, STRING_TYPE,
                                      MessageBuilder, check_new_bag, dataset_topic, obstacle_topics,
                                      rgbd_topics, write_bag)

EPISODE_FRAMES = {"drive": 150, "random": 10, "mixed": 60}
DEFAULT_MAX_DEPTH = 10.0
ATTRIBUTION = "rendered by Duckietown's simulator (duckietown-gym-daffy); maps and assets (c) Duckietown"


@dataclass
class SimConfig:
    """What to render (the command's options)."""
    maps: List[str]
    frames: int
    seed: int = 0
    veh: str = "simbot"
    hz: float = 30.0
    mode: str = "drive"
    domain_rand: bool = False
    distortion: bool = False
    width: int = 640
    height: int = 480
    max_depth_m: float = DEFAULT_MAX_DEPTH
    episode_frames: Optional[int] = None
    obstacle_density: float = 0.0

    def check(self) -> None:
        if not self.maps:
            raise ValueError("no maps given (--maps)")
        if self.frames < len(self.maps):
            raise ValueError("--frames %d is fewer than one frame per map (%d maps)"
                             % (self.frames, len(self.maps)))
        if self.mode not in MODES:
            raise ValueError("--mode %r: expected one of %s" % (self.mode, ", ".join(MODES)))
        if not (self.hz > 0 and self.max_depth_m > 0 and self.width >= 16 and self.height >= 16
                and self.obstacle_density >= 0):
            raise ValueError("--hz and --max-depth must be > 0, --obstacle-density >= 0, the frame at least "
                             "16x16")

    def frames_per_map(self) -> List[int]:
        base, extra = divmod(self.frames, len(self.maps))
        return [base + (1 if i < extra else 0) for i in range(len(self.maps))]


def _scalar(value) -> float:
    """A plain float of the simulator's camera values (numpy arrays of one number when randomized)."""
    return float(np.asarray(value, np.float64).reshape(-1)[0])


@dataclass
class SimFrame:
    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    obstacle_m: float
    map_name: str
    tof_m: float  # the front time-of-flight sensor's reading (geometry.tof)


class SimSession:
    """Renders a :class:`SimConfig`'s frames map by map (:meth:`frames`); ``camera`` is the bag's robot
    camera once the first map is open; ``render_s`` the time spent rendering colour and depth."""

    def __init__(self, config: SimConfig):
        config.check()
        self.config = config
        self.camera: Optional[SimCamera] = None
        self.render_s = 0.0
        self.obstacle_params = node_obstacle_params()
        ensure_display()
        self.simulator = import_simulator()

    def _open(self, index: int, map_name: str):
        c = self.config
        try:
            sim = self.simulator.Simulator(map_name=map_name, seed=int(c.seed) * 1000 + index,
                                           domain_rand=c.domain_rand, camera_width=c.width,
                                           camera_height=c.height, distortion=False, camera_rand=False)
        except Exception as exc:  # the simulator raises bare Exceptions (unknown map, ...)
            raise ValueError("cannot open map %r: %s" % (map_name, str(exc).splitlines()[0] if str(exc) else
                                                         type(exc).__name__)) from None
        if self.camera is None:  # one robot per bag: the first map's (randomized) camera
            self.camera = SimCamera(height_m=_scalar(sim.cam_height), pitch_deg=_scalar(sim.cam_angle[0]),
                                    fov_y_deg=_scalar(sim.cam_fov_y), width=c.width, height=c.height,
                                    distortion=c.distortion)
        return sim

    @property
    def intrinsics(self) -> Intrinsics:
        return self.camera.intrinsics()

    def frames(self) -> Iterator[SimFrame]:
        c = self.config
        episode = c.episode_frames or EPISODE_FRAMES[c.mode]
        for index, (map_name, count) in enumerate(zip(c.maps, c.frames_per_map())):
            sim = self._open(index, map_name)
            renderer = SimRenderer(sim, self.camera, c.max_depth_m)
            plane, rays = self.camera.plane(), FrameRays(self.camera.intrinsics())
            sampler = PoseSampler(sim, np.random.default_rng([int(c.seed), index]))
            add_obstacles(sampler, c.obstacle_density)
            for pos, angle, new in poses(sampler, c.mode, count, c.hz, episode):
                if new and c.domain_rand:
                    sim.reset()  # new appearance; then the bag's camera again
                    renderer.apply_camera()
                start = time.perf_counter()
                rgb, depth = renderer.render(pos, angle)
                self.render_s += time.perf_counter() - start
                xn, yn = rays(*depth.shape)
                yield SimFrame(rgb, depth, obstacle_mask(depth, plane, rays),
                               obstacle_distance_gt(depth, plane, rays, self.obstacle_params), map_name,
                               tof.cone_reading(depth, xn, yn, plane).range_m)


def intrinsic_yaml(intrinsics: Intrinsics, name: str) -> str:
    """A Duckietown / ROS camera_info YAML (``camera_intrinsic/<veh>.yaml``) of ``intrinsics``."""
    K = intrinsics.K.reshape(-1).tolist()
    P = intrinsics.P_matrix.reshape(-1).tolist()
    D = list(intrinsics.D) or [0.0] * 5

    def matrix(rows: int, cols: int, data: Sequence[float]):
        return {"rows": rows, "cols": cols, "data": [float(v) for v in data]}

    data = {"image_width": int(intrinsics.width), "image_height": int(intrinsics.height), "camera_name": name,
            "camera_matrix": matrix(3, 3, K), "distortion_model": intrinsics.model or "plumb_bob",
            "distortion_coefficients": matrix(1, len(D), D),
            "rectification_matrix": matrix(3, 3, np.eye(3).ravel()),
            "projection_matrix": matrix(3, 4, P)}
    return yaml.safe_dump(data, default_flow_style=None, sort_keys=False)


def write_calibration(folder: str, veh: str, camera: SimCamera) -> Tuple[str, str]:
    """The simulated robot's ``camera_intrinsic/<veh>.yaml`` and ``camera_extrinsic/<veh>.yaml`` in
    ``folder`` (atomically); returns their paths."""
    intrinsics = camera.intrinsics()
    lens = "DB21 lens distortion" if camera.distortion else "no distortion"
    note = ("depth-sim2bag: simulated camera %.4f m above the road, %.3f deg down, vertical field of view "
            "%.3f deg, %s; %s" % (camera.height_m, camera.pitch_deg, camera.fov_y_deg, lens, ATTRIBUTION))
    intrinsic = os.path.join(folder, "camera_intrinsic", "%s.yaml" % veh)
    with atomic_file(intrinsic, "w") as f:
        f.write(intrinsic_yaml(intrinsics, veh) + "# %s\n" % note)
    extrinsic = os.path.join(folder, "camera_extrinsic", "%s.yaml" % veh)
    write_extrinsics(extrinsic, homography_from_plane(camera.plane(), intrinsics), comment=note)
    return intrinsic, extrinsic


def write_sim_bag(config: SimConfig, out: str, force: bool = False, jpeg: bool = False,
                  calibration_dir: Optional[str] = None, progress: bool = True) -> dict:
    """Render ``config`` into the bag ``out`` (atomically) and, with ``calibration_dir``, write the
    robot's calibration there. Returns a summary (frames, seconds, rates, camera, obstacles)."""
    check_new_bag(out, force, "--force")
    session = SimSession(config)
    build, ns = MessageBuilder(), config.veh
    image_topic, depth_topic, info_topic = rgbd_topics(ns)
    range_topic, mask_topic = obstacle_topics(ns)
    tof_topic = "/%s/%s" % (ns, tof.TOPIC)
    topics = [(image_topic, IMAGE_TYPE), (depth_topic, DEPTH_TYPE), (info_topic, INFO_TYPE),
              (dataset_topic(depth_topic), STRING_TYPE), (range_topic, RANGE_TYPE), (mask_topic, DEPTH_TYPE),
              (tof_topic, RANGE_TYPE)]
    frame_id, ground_id = "%s/camera_optical_frame" % ns, "%s/footprint" % ns
    obstacle = session.obstacle_params
    fov = 2.0 * math.atan2(obstacle["corridor_width"] / 2.0, obstacle["obstacle_max_range"])
    start_ns = int(round(DEFAULT_START * 1e9))
    bar = progress_bar(progress, config.frames, os.path.basename(out))
    began, count, seen, tofs = time.perf_counter(), 0, 0, 0
    tof_stamp = lambda k: start_ns + int(round(k * 1e9 / tof.RATE_HZ))  # noqa: E731
    try:
        with write_bag(out, topics, build.store) as write:
            write(dataset_topic(depth_topic), start_ns, build.string(SIM_DATASET))
            for i, frame in enumerate(session.frames()):
                stamp = start_ns + int(round(i * 1e9 / config.hz))  # as io.bags.camera_stream_bag stamps
                header = build.header(i, stamp, frame_id)
                intr = session.intrinsics
                write(image_topic, stamp, build.compressed_image(header, *encode_rgb(i, frame.rgb, jpeg)))
                write(depth_topic, stamp, build.depth_image(header, frame.depth))
                write(info_topic, stamp, build.camera_info(header, intr.width, intr.height,
                                                           (intr.fx, intr.fy, intr.cx, intr.cy), intr.D))
                write(mask_topic, stamp, build.mono8(header, frame.mask))
                write(range_topic, stamp, build.range(build.header(i, stamp, ground_id), frame.obstacle_m,
                                                      fov, 0.0, obstacle["obstacle_max_range"]))
                while tof_stamp(tofs) < stamp + int(round(1e9 / config.hz)):  # the driver's 15 Hz timer
                    write(tof_topic, tof_stamp(tofs), build.range(
                        build.header(tofs, tof_stamp(tofs), tof.frame_id(ns)), frame.tof_m,
                        tof.RANGE_FIELDS["field_of_view"], tof.MIN_RANGE_M, tof.MAX_RANGE_M))
                    tofs += 1
                count, seen = count + 1, seen + int(math.isfinite(frame.obstacle_m))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    files = write_calibration(calibration_dir, config.veh, session.camera) if calibration_dir else ()
    elapsed = time.perf_counter() - began
    return {"frames": count, "seconds": elapsed, "render_fps": count / max(session.render_s, 1e-9),
            "overall_fps": count / max(elapsed, 1e-9), "camera": session.camera, "obstacle_frames": seen,
            "calibration": list(files)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output bag")
    parser.add_argument("--maps", required=True, type=options.comma_list,
                        help="comma-separated simulator map names (e.g. loop_obstacles,udem1)")
    parser.add_argument("--frames", type=int, required=True, help="frames in all, split evenly over the maps")
    parser.add_argument("--seed", type=int, default=0, help="same seed and arguments = same bag (default 0)")
    parser.add_argument("--veh", default="simbot",
                        help="robot name: topic namespace and calibration file names (default simbot)")
    parser.add_argument("--hz", type=float, default=30.0, help="frame rate of the stamps and the drive")
    parser.add_argument("--mode", choices=MODES, default="drive",
                        help="drive: follow the lane like a robot (default); random: independent poses; "
                             "mixed: drive and random episodes in turn")
    parser.add_argument("--domain-rand", action="store_true",
                        help="random camera per bag and appearance per episode (the simulator's ranges)")
    parser.add_argument("--distortion", action="store_true", help="the DB21 lens distortion (in camera_info)")
    parser.add_argument("--calibration-dir", default=None,
                        help="write camera_intrinsic/<veh>.yaml and camera_extrinsic/<veh>.yaml here")
    parser.add_argument("--episode-frames", type=int, default=None,
                        help="frames per episode (default: %s)"
                             % ", ".join("%s %d" % item for item in EPISODE_FRAMES.items()))
    parser.add_argument("--obstacle-density", type=float, default=0.0, metavar="D",
                        help="add D obstacles per drivable tile (duckies, cones, Duckiebots) in random lanes "
                             "of each map (default 0: the map's own objects only)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--max-depth", type=float, default=DEFAULT_MAX_DEPTH,
                        help="metres: farther depth is written as 0 (default %g)" % DEFAULT_MAX_DEPTH)
    parser.add_argument("--jpeg", action="store_true", help="JPEG quality 95 (as the robot) instead of PNG")
    options.add_force(parser, "the output bag")
    options.add_progress(parser)


def main(argv: Optional[Sequence[str]] = None) -> int:  # console script depth-sim2bag
    parser = argparse.ArgumentParser(prog="depth-sim2bag", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    config = SimConfig(args.maps, args.frames, args.seed, args.veh, args.hz, args.mode, args.domain_rand,
                       args.distortion, args.width, args.height, args.max_depth, args.episode_frames,
                       args.obstacle_density)
    try:
        summary = write_sim_bag(config, args.out, args.force, args.jpeg, args.calibration_dir, args.progress)
    except (SimUnavailable, OSError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    cam = summary["camera"]
    print("wrote %d frames of %s (%s) to %s in %.1f s: rendering %.1f frames/s at %dx%d (colour + depth), "
          "%.1f frames/s overall; camera %.4f m, %.2f deg down, fov %.2f deg; obstacle ahead in %d frames%s"
          % (summary["frames"], ",".join(config.maps), config.mode, args.out, summary["seconds"],
             summary["render_fps"], config.width, config.height, summary["overall_fps"], cam.height_m,
             cam.pitch_deg, cam.fov_y_deg, summary["obstacle_frames"],
             "; calibration: " + ", ".join(summary["calibration"]) if summary["calibration"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
