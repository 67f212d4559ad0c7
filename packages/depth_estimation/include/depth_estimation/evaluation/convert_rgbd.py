"""RGB-D datasets -> ROS 1 bags (no ROS install needed: the ``rosbags`` library).

Every bag has one layout, the one the evaluator reads. Frame i is stamped ``start + i * period``
(default 0.1 s apart, integer nanoseconds) and written as three messages with the same header
(stamp, seq = i, frame_id) and bag time = stamp:

* ``/<ns>/camera_node/image/compressed`` sensor_msgs/CompressedImage, lossless PNG
  (``format "png"``) or, with ``--jpeg``, JPEG quality 95 (``format "jpeg"``);
* ``/<ns>/depth_gt/image_raw`` sensor_msgs/Image, ``32FC1`` little-endian, metres,
  0 = no measurement;
* ``/<ns>/camera_node/camera_info`` sensor_msgs/CameraInfo, ``plumb_bob`` with zero distortion,
  K / P from the intrinsics, R = identity.

and once, at the stamp of frame 0 and before it, ``/<ns>/dataset`` std_msgs/String: the dataset
(``nyu`` from depth-nyu2bag, ``rgbd`` from depth-rgbd2bag), which ``depth-eval --crop auto`` and
the evaluator node read to pick the Eigen crop for NYU whatever the namespace.

A bag is written to a unique temporary file beside the output, fsynced and renamed into place
when complete (:func:`depth_estimation.io.bags.write_bag`); an existing output is replaced only
with ``--force``.

NYU Depth v2 labeled (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5, read with h5py; the
official ``splits.mat`` is MATLAB v5 with **1-based** ``trainNdxs`` / ``testNdxs``); one bag per
split, ``<out>/nyu_<split>.bag``, frames in split order; intrinsics fx=518.8579 fy=519.4696
cx=325.5824 cy=253.7362 (console name ``depth-nyu2bag``)::

    python3 -m depth_estimation.evaluation.convert_rgbd nyu --mat nyu_depth_v2_labeled.mat \\
        --splits splits.mat --out bags/ [--split test|train|all] [--limit N] [--jpeg] [--force]

Colour images + 16-bit depth PNG/PGM (TUM RGB-D: --depth-scale 5000, KITTI: 256, millimetres:
1000), paired in sorted file-name order, metres = value / depth_scale, 0 stays 0 (no
measurement). Without intrinsics the defaults are fx = fy = max(width, height), cx = width / 2,
cy = height / 2 (a ~53 degree horizontal field of view; give the real ones when known; a
missing fy defaults to fx) (console name ``depth-rgbd2bag``)::

    python3 -m depth_estimation.evaluation.convert_rgbd rgbd --rgb 'tum/rgb/*.png' \\
        --depth 'tum/depth/*.png' --depth-scale 5000 --fx 520.9 --fy 521.0 --cx 325.1 --cy 249.7 \\
        --out tum.bag [--force]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from depth_estimation import options
from depth_estimation.evaluation.scoring import NYU
from depth_estimation.io.bags import (DEPTH_TYPE, IMAGE_TYPE, INFO_TYPE, STRING_TYPE, MessageBuilder,
                                      check_new_bag, dataset_topic, rgbd_topics, write_bag)

NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy (colour camera)
NYU_SPLITS = ("test", "train", "all")
DEFAULT_START = 1.7e9  # seconds: stamp of frame 0
DEFAULT_PERIOD = 0.1  # seconds between frames
JPEG_QUALITY = 95


def default_intrinsics(width: int, height: int, fx: Optional[float] = None, fy: Optional[float] = None,
                       cx: Optional[float] = None,
                       cy: Optional[float] = None) -> Tuple[float, float, float, float]:
    """Fill missing intrinsics: fx = fy = max(w, h) (a missing fy follows a given fx), cx = w/2, cy = h/2."""
    if fx is None:
        fx = float(fy) if fy is not None else float(max(width, height))
    if fy is None:
        fy = fx
    if cx is None:
        cx = width / 2.0
    if cy is None:
        cy = height / 2.0
    return float(fx), float(fy), float(cx), float(cy)


def _check_out(out: str, force: bool) -> None:
    check_new_bag(out, force, "force=True (--force)")


def _checked_frame(i: int, rgb, depth, size: Optional[Tuple[int, int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Frame ``i`` as (RGB uint8 HxWx3, float32 HxW), refused unless sizes agree with each other and
    with ``size`` (the first frame's; None for the first frame)."""
    rgb = np.asarray(rgb)
    depth = np.asarray(depth, dtype="<f4")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("frame %d: colour image must be HxWx3 uint8, got %s %s" % (i, rgb.shape, rgb.dtype))
    if depth.shape != rgb.shape[:2]:
        raise ValueError("frame %d: depth %s does not match colour %s" % (i, depth.shape, rgb.shape[:2]))
    if size is not None and depth.shape != size:
        raise ValueError("frame %d: size %s differs from the first frame's %s" % (i, depth.shape, size))
    return rgb, depth


def encode_rgb(i: int, rgb: np.ndarray, jpeg: bool) -> Tuple[str, bytes]:
    """(format, bytes) of an RGB frame: lossless PNG, or JPEG quality :data:`JPEG_QUALITY`."""
    ext, params, fmt = ((".jpg", [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY], "jpeg") if jpeg
                        else (".png", [], "png"))
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError("frame %d: could not encode %s" % (i, fmt))
    return fmt, buf.tobytes()


def progress_bar(progress: bool, total: Optional[int], desc: str):
    if not progress:
        return None
    from tqdm import tqdm  # optional: only for the progress bar

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr)


def write_rgbd_bag(frames: Iterable[Tuple[object, object]], out: str, intrinsics: Sequence[float],
                   ns: str = "rgbd", start: float = DEFAULT_START, period: float = DEFAULT_PERIOD,
                   jpeg: bool = False, force: bool = False, frame_id: Optional[str] = None,
                   total: Optional[int] = None, progress: bool = True, desc: str = "frames",
                   dataset: str = "rgbd") -> int:
    """Write ``frames`` -- (RGB uint8 HxWx3, depth metres HxW) pairs -- as one bag; returns the count.
    ``intrinsics`` is (fx, fy, cx, cy). All frames must have the size of the first one. ``dataset``
    is recorded on ``/<ns>/dataset``."""
    _check_out(out, force)
    build = MessageBuilder()
    image_topic, depth_topic, info_topic = rgbd_topics(ns)
    topics = [(image_topic, IMAGE_TYPE), (depth_topic, DEPTH_TYPE), (info_topic, INFO_TYPE),
              (dataset_topic(depth_topic), STRING_TYPE)]
    frame_id = frame_id if frame_id is not None else "%s/camera_optical_frame" % ns
    start_ns, period_ns = int(round(start * 1e9)), int(round(period * 1e9))
    size, count = None, 0
    bar = progress_bar(progress, total, desc)
    try:
        with write_bag(out, topics, build.store) as write:
            write(dataset_topic(depth_topic), start_ns, build.string(dataset))
            for i, (rgb, depth) in enumerate(frames):
                rgb, depth = _checked_frame(i, rgb, depth, size)
                size = depth.shape
                stamp = start_ns + i * period_ns
                header = build.header(i, stamp, frame_id)
                write(image_topic, stamp, build.compressed_image(header, *encode_rgb(i, rgb, jpeg)))
                write(depth_topic, stamp, build.depth_image(header, depth))
                write(info_topic, stamp, build.camera_info(header, size[1], size[0], intrinsics))
                count += 1
                if bar is not None:
                    bar.update(1)
            if count == 0:
                raise ValueError("no frames to write to %s" % out)
    finally:
        if bar is not None:
            bar.close()
    return count


# --- NYU Depth v2 -------------------------------------------------------------------------------

def nyu_split_indices(splits_path: str, split: str, count: int) -> List[int]:
    """0-based frame indices of ``split`` ("test", "train" or "all") from the 1-based splits.mat."""
    if split not in NYU_SPLITS:
        raise ValueError("split must be one of %s, got %r" % (", ".join(NYU_SPLITS), split))
    if split == "all":
        return list(range(count))
    from scipy.io import loadmat  # optional: only NYU test/train splits need scipy

    key = "%sNdxs" % split
    mat = loadmat(splits_path)
    if key not in mat:
        raise ValueError("%s has no %s (keys: %s)" % (splits_path, key,
                                                      ", ".join(k for k in mat if not k.startswith("__"))))
    one_based = [int(v) for v in mat[key].reshape(-1)]
    bad = [v for v in one_based if not 1 <= v <= count]
    if bad:
        raise ValueError("%s %s holds %d indices outside 1..%d (e.g. %d): not 1-based indices into this .mat"
                         % (splits_path, key, len(bad), count, bad[0]))
    return [v - 1 for v in one_based]


def _nyu_frames(images, depths, indices: Sequence[int]):
    for k in indices:
        # h5py shows MATLAB's 480x640x3xN as (N, 3, 640, 480) and 480x640xN as (N, 640, 480).
        rgb = np.ascontiguousarray(np.asarray(images[k]).transpose(2, 1, 0))
        depth = np.ascontiguousarray(np.asarray(depths[k], dtype=np.float32).T)
        yield rgb, depth


def nyu2bag(mat_path: str, splits_path: Optional[str], out_dir: str, split: str = "test",
            limit: Optional[int] = None, jpeg: bool = False, force: bool = False, ns: str = "nyu",
            start: float = DEFAULT_START, period: float = DEFAULT_PERIOD, depth_key: str = "depths",
            progress: bool = True) -> str:
    """The frames of NYUv2 ``split`` (in splits.mat order; "all" = every frame, splits.mat unused)
    as ``<out_dir>/nyu_<split>.bag``; ``depth_key`` "rawDepths" for the raw (holed) depth.
    Returns the bag path."""
    import h5py  # optional: only the NYU converter reads MATLAB v7.3 (HDF5) files

    out = os.path.join(out_dir, "nyu_%s.bag" % split)
    _check_out(out, force)
    if split != "all" and not splits_path:
        raise ValueError("split %r needs splits.mat (--splits)" % split)
    with h5py.File(mat_path, "r") as f:
        for key in ("images", depth_key):
            if key not in f:
                raise ValueError("%s has no %r dataset (is it nyu_depth_v2_labeled.mat?)" % (mat_path, key))
        images, depths = f["images"], f[depth_key]
        if images.ndim != 4 or images.shape[1] != 3 or depths.ndim != 3 or \
                depths.shape != (images.shape[0],) + tuple(images.shape[2:]):
            raise ValueError("%s: images %s / %s %s are not NYUv2's (N, 3, 640, 480) / (N, 640, 480) layout"
                             % (mat_path, images.shape, depth_key, depths.shape))
        indices = nyu_split_indices(splits_path or "", split, images.shape[0])
        if limit is not None:
            indices = indices[:max(0, int(limit))]
        write_rgbd_bag(_nyu_frames(images, depths, indices), out, NYU_INTRINSICS, ns=ns, start=start,
                       period=period, jpeg=jpeg, force=force, total=len(indices), progress=progress,
                       desc="nyu_%s" % split, dataset=NYU)
    return out


# --- colour + 16-bit depth files ----------------------------------------------------------------

def pair_rgbd_files(rgb_glob: str, depth_glob: str) -> List[Tuple[str, str]]:
    """(colour, depth) file pairs in sorted order; unequal or zero counts are an error."""
    rgbs = sorted(glob.glob(os.path.expanduser(rgb_glob)))
    depths = sorted(glob.glob(os.path.expanduser(depth_glob)))
    if len(rgbs) != len(depths):
        raise ValueError("%d colour images (%s) but %d depth images (%s): they are paired in sorted order, "
                         "so the counts must be equal" % (len(rgbs), rgb_glob, len(depths), depth_glob))
    if not rgbs:
        raise ValueError("no files match %s" % rgb_glob)
    return list(zip(rgbs, depths))


def _rgbd_frames(pairs: Sequence[Tuple[str, str]], depth_scale: float):
    for rgb_path, depth_path in pairs:
        bgr = cv2.imread(rgb_path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("cannot read colour image %s" % rgb_path)
        raw = cv2.imread(depth_path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError("cannot read depth image %s" % depth_path)
        if raw.ndim != 2 or raw.dtype not in (np.uint16, np.uint8):
            raise ValueError("%s is not a single-channel 16-bit depth image (%s %s)"
                             % (depth_path, raw.shape, raw.dtype))
        if raw.shape != bgr.shape[:2]:
            raise ValueError("%s is %s but %s is %s" % (depth_path, raw.shape, rgb_path, bgr.shape[:2]))
        yield bgr[:, :, ::-1], raw.astype(np.float32) / np.float32(depth_scale)


def rgbd2bag(rgb_glob: str, depth_glob: str, depth_scale: float, out: str, fx: Optional[float] = None,
             fy: Optional[float] = None, cx: Optional[float] = None, cy: Optional[float] = None,
             limit: Optional[int] = None, jpeg: bool = False, force: bool = False, ns: str = "rgbd",
             start: float = DEFAULT_START, period: float = DEFAULT_PERIOD, progress: bool = True) -> str:
    """Colour + 16-bit depth files (paired in sorted order) as one bag; metres = value / depth_scale.
    Missing intrinsics: see :func:`default_intrinsics`. Returns the bag path."""
    _check_out(out, force)
    if not depth_scale or depth_scale <= 0:
        raise ValueError("depth_scale must be > 0 (TUM 5000, KITTI 256, millimetres 1000)")
    pairs = pair_rgbd_files(rgb_glob, depth_glob)
    if limit is not None:
        pairs = pairs[:max(0, int(limit))]
    first = cv2.imread(pairs[0][0], cv2.IMREAD_COLOR) if pairs else None
    if first is None:
        raise ValueError("cannot read colour image %s" % (pairs[0][0] if pairs else rgb_glob))
    height, width = first.shape[:2]
    intrinsics = default_intrinsics(width, height, fx, fy, cx, cy)
    write_rgbd_bag(_rgbd_frames(pairs, depth_scale), out, intrinsics, ns=ns, start=start, period=period,
                   jpeg=jpeg, force=force, total=len(pairs), progress=progress, desc=os.path.basename(out))
    return out


# --- command line -------------------------------------------------------------------------------

def add_bag_arguments(parser: argparse.ArgumentParser, ns: str) -> None:
    """The options both converters share: frame count, encoding, overwriting, namespace, timing."""
    parser.add_argument("--limit", type=int, default=None, help="at most N frames")
    parser.add_argument("--jpeg", action="store_true",
                        help="JPEG quality %d instead of lossless PNG" % JPEG_QUALITY)
    options.add_force(parser, "the output bag")
    parser.add_argument("--ns", default=ns, help="topic namespace (default %s)" % ns)
    parser.add_argument("--start", type=float, default=DEFAULT_START, help="stamp of frame 0, s")
    parser.add_argument("--period", type=float, default=DEFAULT_PERIOD, help="seconds between frames")


def add_nyu_arguments(parser: argparse.ArgumentParser) -> None:
    """depth-nyu2bag's options."""
    parser.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat")
    parser.add_argument("--splits", default=None, help="splits.mat (not needed for --split all)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split", default="test", choices=NYU_SPLITS)
    parser.add_argument("--raw-depth", action="store_true", help="rawDepths (with holes) instead of depths")
    add_bag_arguments(parser, "nyu")


def add_rgbd_arguments(parser: argparse.ArgumentParser) -> None:
    """depth-rgbd2bag's options."""
    parser.add_argument("--rgb", required=True, help="glob of colour images (quote it)")
    parser.add_argument("--depth", required=True, help="glob of 16-bit depth PNG/PGM (quote it)")
    parser.add_argument("--depth-scale", type=float, required=True,
                        help="value per metre: TUM 5000, KITTI 256, mm 1000")
    for name in ("fx", "fy", "cx", "cy"):
        parser.add_argument("--" + name, type=float, default=None)
    parser.add_argument("--out", required=True, help="output bag")
    add_bag_arguments(parser, "rgbd")


def _convert(cmd: str, args: argparse.Namespace) -> int:
    try:
        if cmd == "nyu":
            out = nyu2bag(args.mat, args.splits, args.out, split=args.split, limit=args.limit, jpeg=args.jpeg,
                          force=args.force, ns=args.ns, start=args.start, period=args.period,
                          depth_key="rawDepths" if args.raw_depth else "depths")
        else:
            out = rgbd2bag(args.rgb, args.depth, args.depth_scale, args.out, args.fx, args.fy, args.cx,
                           args.cy, limit=args.limit, jpeg=args.jpeg, force=args.force, ns=args.ns,
                           start=args.start, period=args.period)
    except (OSError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("wrote %s" % out)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python3 -m depth_estimation.evaluation.convert_rgbd nyu|rgbd ...``"""
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.evaluation.convert_rgbd",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    add_nyu_arguments(sub.add_parser("nyu", help="NYUv2 labeled .mat + splits.mat -> <out>/nyu_<split>.bag"))
    add_rgbd_arguments(sub.add_parser("rgbd", help="colour + 16-bit depth images -> one bag"))
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return 2
    return _convert(args.cmd, args)


def _console(cmd: str, prog: str, add: Callable[[argparse.ArgumentParser], None],
             argv: Optional[Sequence[str]]) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add(parser)
    return _convert(cmd, parser.parse_args(argv))


def nyu_main(argv: Optional[Sequence[str]] = None) -> int:  # console script depth-nyu2bag
    return _console("nyu", "depth-nyu2bag", add_nyu_arguments, argv)


def rgbd_main(argv: Optional[Sequence[str]] = None) -> int:  # console script depth-rgbd2bag
    return _console("rgbd", "depth-rgbd2bag", add_rgbd_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
