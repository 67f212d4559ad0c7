"""Fixtures for tests and the rostests: tiny random models in real formats, camera-stream bags.

``python3 tests/depth_fixtures.py DIR`` writes everything the package's rostests read
(they default to ``$DEPTH_TEST_FIXTURES``, else ``/tmp/depth_estimation_fixtures``), so
``rostest depth_estimation camera_stream.test`` also runs by hand.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional

import cv2
import numpy as np

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":  # run as a script: the library from this checkout
    sys.path.insert(0, os.path.join(REPO_DIR, "packages", "depth_estimation", "include"))

from depth_estimation.io import bags  # noqa: E402 (after the path set-up above)
REAL_BAG = os.path.join(REPO_DIR, "assets", "recordings", "raspicam_aruco_marker.bag")
REAL_RGBD = os.path.join(REPO_DIR, "assets", "frames")  # TUM fr1/desk: rgb_N.png + depth/depth_N.png
DEFAULT_DIR = os.environ.get("DEPTH_TEST_FIXTURES", "/tmp/depth_estimation_fixtures")
TINY = dict(hidden_size=64, num_layers=4, num_heads=2, out_indices=(1, 2, 3, 4),
            neck_hidden_sizes=(8, 16, 32, 32), fusion_hidden_size=16)


def tiny_da2(seed: int = 0):
    """A Depth-Anything-V2 with the real structure but tiny widths, random weights."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from depth_estimation.models.da2 import make_config

    torch.manual_seed(seed)
    return DepthAnythingForDepthEstimation(make_config(**TINY)).eval()


def scaled_tiny_da2():
    """:func:`tiny_da2` with weights large enough that its output is not ~1e-7 (the init's scale), and
    a layer scale that is not all ones (as in trained DINOv2)."""
    import torch

    model = tiny_da2()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def save_tiny_da2(path: str, seed: int = 0) -> str:
    """A tiny random model saved in Hugging Face format (config.json + model.safetensors)."""
    tiny_da2(seed).save_pretrained(path, safe_serialization=True)
    return path


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    return cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), quality])[1].tobytes()


def _broken_huffman_tables(jpeg: bytes) -> bytes:
    """The same JPEG with its first Huffman table overwritten (a bit-error in the header)."""
    start = jpeg.index(b"\xff\xc4") + 5
    return jpeg[:start] + b"\xff" * 32 + jpeg[start + 32:]


def bad_frames(good_jpeg: bytes) -> Dict[str, bytes]:
    """One frame for every way the node must refuse input (kind -> bytes)."""
    rng = np.random.default_rng(0)
    return {
        "empty": b"",
        "unknown_format": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated": good_jpeg[: len(good_jpeg) // 2],
        "corrupt": _broken_huffman_tables(good_jpeg),
        "too_small": _jpeg(np.full((1, 1, 3), 128, np.uint8)),
        "too_large": _jpeg(np.zeros((10000, 10000, 3), np.uint8), quality=50),
        "aspect": _jpeg(np.zeros((16, 4096, 3), np.uint8)),  # would be a 308x78848 network input
    }


def with_exif_orientation(jpeg: bytes, orientation: int = 6) -> bytes:
    """The same JPEG with an EXIF APP1 segment saying ``orientation`` (6: rotate 90 degrees clockwise
    to display), as phone and some USB cameras write it. The pixels stay the sensor's."""
    tiff = (b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little")  # header, one IFD entry
            + (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
            + orientation.to_bytes(2, "little") + b"\x00\x00" + (0).to_bytes(4, "little"))
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def write_sidecar(bag_path: str, stamps: List[int], bad_kinds: Dict[int, str], frame: bags.CameraFrame,
                  rate: float, **extra) -> None:
    height, width = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    info = {"stamps_ns": stamps, "good": [i not in bad_kinds for i in range(len(stamps))], "rate": rate,
            "bad_kinds": sorted(bad_kinds.values()), "frame_id": frame.frame_id, "width": width,
            "height": height}
    info.update(extra)
    with open(os.path.splitext(bag_path)[0] + ".json", "w") as f:
        json.dump(info, f)


def stream_fixture(out: str, count: int, rate: float, bad_every: Optional[int] = None, tail: float = 3.0,
                   veh: str = "testbot", exif_every: Optional[int] = None, info_size=None, **extra) -> str:
    """A real-frame stream bag (+ a JSON sidecar with stamps and which frames are good).

    ``bad_every``: every n-th frame is one of :func:`bad_frames`; ``exif_every``: every n-th frame
    is the good frame with an EXIF orientation; ``info_size``: the camera_info says (width, height)
    instead of the frames' size."""
    frames = bags.read_camera_frames(REAL_BAG)
    if info_size is not None:
        info = dataclasses.replace(frames[0].camera_info, width=info_size[0], height=info_size[1])
        frames = [bags.CameraFrame(f.data, f.format, f.frame_id, info) for f in frames]
    kinds, replace = {}, {}
    if exif_every:
        replace = {i: with_exif_orientation(frames[0].data) for i in range(2, count, exif_every)}
    if bad_every:
        samples = bad_frames(frames[0].data)
        names = sorted(samples)
        kinds = {i: names[(i // bad_every) % len(names)] for i in range(1, count, bad_every)}
        replace.update({i: samples[kind] for i, kind in kinds.items()})
    stamps = bags.camera_stream_bag(frames, out, veh=veh, count=count, rate=rate, tail=tail, overwrite=True,
                                    bad=replace)
    write_sidecar(out, stamps, kinds, frames[0], rate, **extra)
    return out


def rgbd_fixture(out: str) -> str:
    """The real TUM RGB-D frames as an evaluation bag (namespace rgbd), like depth-rgbd2bag writes."""
    from depth_estimation.evaluation.convert_rgbd import rgbd2bag

    rgbd2bag(os.path.join(REAL_RGBD, "rgb_*.png"), os.path.join(REAL_RGBD, "depth", "depth_*.png"), 5000.0, out,
             fx=520.9, fy=521.0, cx=325.1, cy=249.7, force=True, progress=False)
    return out


FLOOR = os.path.join(REPO_DIR, "assets", "rgbd_floor")  # slambook2 ch5/rgbd dining room: the floor is visible
FLOOR_INTRINSICS = (518.0, 519.0, 325.5, 253.5)  # fx, fy, cx, cy of those Kinect frames


def floor_depth(name: str) -> np.ndarray:
    """Ground-truth depth (metres, 0 = none) of one real floor frame."""
    raw = cv2.imread(os.path.join(FLOOR, "depth", name + ".pgm"), cv2.IMREAD_UNCHANGED)
    return raw.astype(np.float64) / 1000.0  # millimetres


def fit_floor(depth: np.ndarray, threshold: float = 0.02, iterations: int = 400, seed: int = 0):
    """(unit normal pointing down from the camera, distance): a RANSAC plane through the back-projected
    ground-truth points of the lower image, refined by least squares on its inliers."""
    fx, fy, cx, cy = FLOOR_INTRINSICS
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    use = (depth > 0) & (v > 0.55 * depth.shape[0])
    z = depth[use]
    points = np.stack([(u[use] - cx) / fx * z, (v[use] - cy) / fy * z, z], axis=1)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(iterations):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-9:
            continue
        n = n / np.linalg.norm(n)
        inliers = np.abs(points @ n - n @ a) < threshold
        if best is None or inliers.sum() > best.sum():
            best = inliers
    inlier_points = points[best]
    centre = inlier_points.mean(axis=0)
    normal = np.linalg.svd(inlier_points - centre, full_matrices=False)[2][2]
    distance = float(normal @ centre)
    return (normal, distance) if distance > 0 else (-normal, -distance)


def add_obstacle(depth: np.ndarray) -> np.ndarray:
    """A board standing on the floor in the lower middle of the frame, in front of what is there."""
    out = depth.copy()
    box = out[300:430, 240:420]
    box[...] = 0.85 * box[box > 0].min()
    return out


def floor_extrinsics(depth: np.ndarray, path: str) -> str:
    """The floor of ``depth`` as a Duckietown extrinsic file (as a robot's calibration is made once)."""
    from depth_estimation.geometry.calibration import (Intrinsics, homography_from_plane, plane_from_normal,
                                                       write_extrinsics)

    normal, distance = fit_floor(depth)
    intrinsics = Intrinsics(*FLOOR_INTRINSICS, 640, 480)
    return write_extrinsics(path, homography_from_plane(plane_from_normal(normal, distance), intrinsics))


def metric_fixture(directory: str, count: int = 24, rate: float = 4.0, veh: str = "testbot",
                   name: str = "metric.bag", stamped: bool = True) -> str:
    """A real floor frame as a camera stream with its Kinect camera_info, the floor's extrinsic file
    (``metric_extrinsic.yaml``) and the scene's depth with a board on the floor (``metric_depth.npy``,
    what test/oracle_depth answers for the network)."""
    depth = floor_depth("1")
    floor_extrinsics(depth, os.path.join(directory, "metric_extrinsic.yaml"))
    np.save(os.path.join(directory, "metric_depth.npy"), add_obstacle(depth))
    color = cv2.imread(os.path.join(FLOOR, "color", "1.png"))
    build = bags.MessageBuilder()
    frame_id = "%s/camera_optical_frame" % veh
    info = build.camera_info(build.header(0, 0, frame_id), 640, 480, FLOOR_INTRINSICS)
    frame = bags.CameraFrame(_jpeg(color), "jpeg", frame_id, info)
    out = os.path.join(directory, name)
    stamps = bags.camera_stream_bag([frame], out, veh=veh, count=count, rate=rate, tail=3.0, overwrite=True,
                                    stamped=stamped)
    write_sidecar(out, stamps, {}, frame, rate, depth=os.path.join(directory, "metric_depth.npy"))
    return out


def prepare(directory: str = DEFAULT_DIR) -> Dict[str, str]:
    """Everything the rostests read; returns name -> path."""
    os.makedirs(directory, exist_ok=True)
    paths = {
        "tiny_da2": save_tiny_da2(os.path.join(directory, "tiny_da2")),
        # 30 Hz real camera stream for 3 s
        "stream": stream_fixture(os.path.join(directory, "stream.bag"), count=90, rate=30.0),
        # slower than the tiny model, every 3rd frame bad (each kind of bad input twice), and good
        # frames with an EXIF orientation among them
        "corrupt": stream_fixture(os.path.join(directory, "corrupt.bag"), count=42, rate=5.0, bad_every=3,
                                  exif_every=6),
        # slower than the tiny model; one inference in 4 fails (test/fault_injection, the warm-up is
        # call 1) and the camera_info is 640x480 while the frames are 1280x720
        "robust": stream_fixture(os.path.join(directory, "robust.bag"), count=24, rate=5.0, info_size=(640, 480),
                                 fail_every=4),
        # camera rate, far faster than random:da2-small runs here
        "backlog": stream_fixture(os.path.join(directory, "backlog.bag"), count=180, rate=30.0, tail=6.0),
        "rgbd": rgbd_fixture(os.path.join(directory, "rgbd.bag")),
        # a real floor frame at 4 Hz with the floor's calibration, for metric depth (test/oracle_depth)
        "metric": metric_fixture(directory),
        # 10 s of it at 8 Hz (more frames than the node keeps camera_infos), and the same with every
        # header stamp 0: looped in test/looped_stream.test
        "metric_loop": metric_fixture(directory, count=80, rate=8.0, name="metric_loop.bag"),
        "metric_unstamped": metric_fixture(directory, count=80, rate=8.0, name="metric_unstamped.bag",
                                           stamped=False),
    }
    return paths


if __name__ == "__main__":
    for name, path in prepare(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR).items():
        print("%-10s %s" % (name, path))
