"""Where the simulated robot is, and what ground truth it sees: poses on a Duckietown map (a lane
drive or random drivable poses), the obstacle mask and the distance to the closest obstacle ahead.

Poses use the simulator's coordinates: ``pos`` = (x, 0, z) of the robot's origin, ``angle`` = heading
in radians (direction (cos a, 0, -sin a)). ``drive`` follows the right lane's Bezier curves (the
simulator's ``closest_curve_point``) at :data:`DRIVE_SPEED` with a gentle weave, as a lane-following
Duckiebot does; when its next pose is not valid (off the road, or colliding with an object: it has
driven up to an obstacle) or the episode is over, it starts again at a random pose. ``random``
draws every frame's pose independently: a random drivable tile, position and heading within
:data:`MAX_LANE_ANGLE_DEG` of its lane, colliding with nothing; ``mixed`` alternates drive and
random episodes. All randomness comes from one
``numpy`` generator, so one seed gives one sequence.

Ground truth from the exact depth and the true ground plane, in the node's own conventions
(:mod:`depth_estimation.geometry.obstacles`, parameters from the node's ``default.yaml``): the mask
marks pixels more than :data:`MASK_MIN_HEIGHT_M` above the road (objects: duckies, Duckiebots,
cones, signs, buildings, trees), and the obstacle distance is what the node's ``~obstacle_distance``
would publish from perfect depth (the closest point in the corridor, forward distance from the
robot's origin, ``inf`` when none is seen).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from depth_estimation.framepath.params import read_param_file
from depth_estimation.geometry import obstacles
from depth_estimation.geometry.camera import FrameRays, Intrinsics
from depth_estimation.geometry.plane import GroundPlane
from depth_estimation.io.paths import PACKAGE_DIR

MODES = ("drive", "random", "mixed")
DRIVE_SPEED = 0.25  # m/s: a lane-following DB21
LOOKAHEAD_M = 0.25  # the drive steers towards the lane point this far ahead
MAX_TURN_RATE = 2.5  # rad/s
WEAVE_M, WEAVE_PERIOD_S = 0.03, 4.0  # lateral weave around the lane centre
MAX_LANE_ANGLE_DEG = 45.0  # random poses: heading within this of the lane's
MAX_ATTEMPTS = 500
MASK_MIN_HEIGHT_M = 0.01
#: Obstacles added by :func:`add_obstacles` (kind, height in metres), in turn.
OBSTACLE_KINDS = (("duckie", 0.06), ("cone", 0.08), ("duckiebot", 0.12), ("duckie", 0.08), ("cone", 0.06))
OBSTACLE_LATERAL_M = 0.06
NODE_DEFAULTS = os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")
Pose = Tuple[np.ndarray, float]


def _dir(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), 0.0, -math.sin(angle)])


def _heading(vector: np.ndarray) -> float:
    return math.atan2(-float(vector[2]), float(vector[0]))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


class PoseSampler:
    """Valid random poses on the simulator's map (see the module docstring)."""

    def __init__(self, sim, rng: np.random.Generator):
        self.sim, self.rng = sim, rng
        tiles = list(getattr(sim, "drivable_tiles", []))
        if not tiles:
            raise ValueError("map %r has no drivable tiles" % getattr(sim, "map_name", "?"))
        self.tiles = tiles

    def lane_heading(self, pos: np.ndarray, angle: float) -> Optional[float]:
        """The heading of the lane the robot at (pos, angle) is in; None when it is in none."""
        point, tangent = self.sim.closest_curve_point(pos, angle)
        if point is None or tangent is None:
            return None
        return _heading(tangent)

    def valid(self, pos: np.ndarray, angle: float) -> bool:
        return bool(self.sim._valid_pose(pos, angle))

    def random_pose(self) -> Pose:
        size = float(self.sim.road_tile_size)
        for _ in range(MAX_ATTEMPTS):
            i, j = self.tiles[int(self.rng.integers(len(self.tiles)))]["coords"]
            pos = np.array([(i + self.rng.random()) * size, 0.0, (j + self.rng.random()) * size])
            angle = float(self.rng.uniform(0.0, 2.0 * math.pi))
            lane = self.lane_heading(pos, angle)
            if lane is None or abs(math.degrees(_wrap(angle - lane))) > MAX_LANE_ANGLE_DEG:
                continue
            if self.valid(pos, angle):
                return pos, angle
        raise ValueError("no valid pose found on map %r in %d attempts"
                         % (getattr(self.sim, "map_name", "?"), MAX_ATTEMPTS))


class Drive:
    """A lane-following drive at ``hz`` frames per second (see the module docstring)."""

    def __init__(self, sampler: PoseSampler, hz: float):
        self.sampler, self.dt = sampler, 1.0 / float(hz)
        self.pos, self.angle, self.t = None, 0.0, 0.0
        self.phase = 0.0

    def restart(self) -> Pose:
        self.pos, self.angle = self.sampler.random_pose()
        self.t, self.phase = 0.0, float(self.sampler.rng.uniform(0.0, 2.0 * math.pi))
        return self.pos, self.angle

    def step(self) -> Optional[Pose]:
        """The next pose, or None when the drive cannot go on (then :meth:`restart`)."""
        point, tangent = self.sampler.sim.closest_curve_point(self.pos, self.angle)
        if point is None or tangent is None:
            return None
        tangent = np.asarray(tangent, np.float64) / max(1e-9, float(np.linalg.norm(tangent)))
        right = np.cross(tangent, [0.0, 1.0, 0.0])
        weave = WEAVE_M * math.sin(2.0 * math.pi * self.t / WEAVE_PERIOD_S + self.phase)
        target = np.asarray(point, np.float64) + LOOKAHEAD_M * tangent + weave * right
        turn = _wrap(_heading(target - self.pos) - self.angle)
        limit = MAX_TURN_RATE * self.dt
        angle = self.angle + max(-limit, min(limit, turn))
        pos = self.pos + DRIVE_SPEED * self.dt * _dir(angle)
        if not self.sampler.valid(pos, angle):
            return None
        self.pos, self.angle, self.t = pos, angle, self.t + self.dt
        return pos, angle


def _map_position(sim):
    """The map file's ``pos`` (tile units; Duckietown's map loader flips an axis, map by map) of a
    simulator position (x, 0, z): the loader's own transform, probed and inverted (it is affine)."""
    from duckietown_world.world_duckietown.map_loading import get_transform  # optional: simulator only

    def forward(pos) -> np.ndarray:
        pose = get_transform({"pos": list(pos)}, sim.grid_width, sim.road_tile_size).as_SE2()
        weird = np.asarray(sim.weird_from_cartesian(pose)[0], np.float64)
        return np.array([weird[0], weird[2]])

    origin = forward((0.0, 0.0))
    A = np.stack([forward((1.0, 0.0)) - origin, forward((0.0, 1.0)) - origin], axis=1)

    def to_map(at: np.ndarray):
        return [float(v) for v in np.linalg.solve(A, np.array([at[0], at[2]]) - origin)]

    return to_map


def add_obstacles(sampler: PoseSampler, density: float) -> int:
    """Place ``density`` obstacles per drivable tile (at least one when > 0) of :data:`OBSTACLE_KINDS`
    in turn, each near the centre of a random lane (within :data:`OBSTACLE_LATERAL_M`), turned at
    random, as static objects of the map (rendered, and in the collision checks of the poses). For
    maps with few or no objects in the lanes (the test maps). Returns the count."""
    sim, rng = sampler.sim, sampler.rng
    count = int(round(density * len(sampler.tiles))) if density > 0 else 0
    count = max(count, 1) if density > 0 else 0
    to_map = _map_position(sim)
    added = []
    for k in range(count):
        kind, height = OBSTACLE_KINDS[k % len(OBSTACLE_KINDS)]
        pos, angle = sampler.random_pose()
        point, tangent = sim.closest_curve_point(pos, angle)
        right = np.cross(np.asarray(tangent, np.float64), [0.0, 1.0, 0.0])
        right /= max(1e-9, float(np.linalg.norm(right)))
        at = np.asarray(point, np.float64) + float(rng.uniform(-1.0, 1.0)) * OBSTACLE_LATERAL_M * right
        added.append({"kind": kind, "pos": to_map(at),
                      "rotate": float(rng.uniform(0.0, 360.0)), "height": height, "static": True})
    load_objects(sim, added)
    return len(added)


def load_objects(sim, added) -> None:
    """Add map objects (dicts of the map format, ``pos`` in tile units) to the simulator's map."""
    if added:
        existing = (sim.map_data or {}).get("objects") or []
        existing = list(existing.values()) if isinstance(existing, dict) else list(existing)
        sim._load_objects(dict(sim.map_data or {}, objects=existing + added))


def place_obstacle(sim, kind: str, at: np.ndarray, rotate_deg: float = 0.0) -> None:
    """One static obstacle of :data:`OBSTACLE_KINDS` (its first height) at simulator position ``at``."""
    height = dict(reversed(OBSTACLE_KINDS))[kind]
    load_objects(sim, [{"kind": kind, "pos": _map_position(sim)(at), "rotate": float(rotate_deg),
                        "height": height, "static": True}])


def poses(sampler: PoseSampler, mode: str, frames: int, hz: float,
          episode_frames: int) -> Iterator[Tuple[np.ndarray, float, bool]]:
    """(pos, angle, new_episode) for ``frames`` frames: ``new_episode`` is True on the first frame of
    every episode (every ``episode_frames`` frames, and whenever a drive restarts). ``mixed``
    alternates drive and random episodes, starting with a drive."""
    if mode not in MODES:
        raise ValueError("mode %r: expected one of %s" % (mode, ", ".join(MODES)))
    drive = Drive(sampler, hz)
    since, episode = 0, -1
    for i in range(frames):
        new = i == 0 or since >= episode_frames
        episode += int(new)
        kind = ("drive", "random")[episode % 2] if mode == "mixed" else mode
        pose = None if new or kind == "random" else drive.step()
        if pose is None:
            pose = drive.restart() if kind == "drive" else sampler.random_pose()
            new = new or kind == "drive"
        since = 0 if new else since + 1
        yield pose[0], pose[1], new


def node_obstacle_params(path: str = NODE_DEFAULTS) -> Dict[str, Any]:
    """The node's obstacle parameters (corridor, heights, range) from its default configuration."""
    params = read_param_file(path)
    keys = ("corridor_width", "obstacle_min_height", "obstacle_max_height", "obstacle_max_range")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError("%s has no %s" % (path, ", ".join(missing)))
    return {k: float(params[k]) for k in keys}


def heights_above_ground(depth_m: np.ndarray, plane: GroundPlane, rays: FrameRays) -> np.ndarray:
    """Height above the road (metres) of every pixel's point; NaN where the depth is 0 (none).
    ``rays``: the camera's pixel rays (kept by the caller for its frames)."""
    xn, yn = rays(depth_m.shape[0], depth_m.shape[1])
    R, t = plane.R_ground_from_camera, plane.t
    z = np.asarray(depth_m, np.float64)
    height = t[2] + z * (R[2, 0] * xn + R[2, 1] * yn + R[2, 2])
    height[~(z > 0)] = np.nan
    return height


def obstacle_mask(depth_m: np.ndarray, plane: GroundPlane, rays: FrameRays,
                  min_height_m: float = MASK_MIN_HEIGHT_M) -> np.ndarray:
    """uint8 HxW: 255 on objects (points more than ``min_height_m`` above the road), 0 on the road,
    the ground and where there is no depth (the sky)."""
    with np.errstate(invalid="ignore"):
        above = heights_above_ground(depth_m, plane, rays) > min_height_m
    return np.where(above, 255, 0).astype(np.uint8)


def obstacle_distance_gt(depth_m: np.ndarray, plane: GroundPlane, rays: FrameRays,
                         params: Dict[str, Any]) -> float:
    """The node's obstacle distance (:func:`depth_estimation.geometry.obstacles.obstacle_distance`)
    on exact depth, every pixel: metres, ``inf`` when no obstacle is in the corridor."""
    return obstacles.obstacle_distance(depth_m, plane, rays.intrinsics, params["corridor_width"],
                                       min_height_m=params["obstacle_min_height"],
                                       max_range_m=params["obstacle_max_range"],
                                       max_height_m=params["obstacle_max_height"], step=1, rays=rays)
