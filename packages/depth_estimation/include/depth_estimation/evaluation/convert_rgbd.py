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

A bag is written to ``<out>.partial`` and renamed into place when complete; an existing output
is replaced only with ``--force``.

NYU Depth v2 labeled (``nyu_depth_v2_labeled.mat``, MATLAB v7.3 = HDF5, read with h5py; the
official ``splits.mat`` is MATLAB v5 with **1-based** ``trainNdxs`` / ``testNdxs``); one bag per
split, ``<out>/nyu_<split>.bag``, frames in split order; intrinsics fx=518.8579 fy=519.4696
cx=325.5824 cy=253.7362 (console name ``depth-nyu2bag``)::

    python3 -m depth_estimation.convert_rgbd nyu --mat nyu_depth_v2_labeled.mat \\
        --splits splits.mat --out bags/ [--split test|train|all] [--limit N] [--jpeg] [--force]

Colour images + 16-bit depth PNG/PGM (TUM RGB-D: --depth-scale 5000, KITTI: 256, millimetres:
1000), paired in sorted file-name order, metres = value / depth_scale, 0 stays 0 (no
measurement). Without intrinsics the defaults are fx = fy = max(width, height), cx = width / 2,
cy = height / 2 (a ~53 degree horizontal field of view; give the real ones when known; a
missing fy defaults to fx) (console name ``depth-rgbd2bag``)::

    python3 -m depth_estimation.convert_rgbd rgbd --rgb 'tum/rgb/*.png' --depth 'tum/depth/*.png' \\
        --depth-scale 5000 --fx 520.9 --fy 521.0 --cx 325.1 --cy 249.7 --out tum.bag [--force]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Iterable, List, Optional, Sequence, Tuple

IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
DEPTH_TYPE = "sensor_msgs/msg/Image"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"

NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy (colour camera)
NYU_SPLITS = ("test", "train", "all")
DEFAULT_START = 1.7e9  # seconds: stamp of frame 0
DEFAULT_PERIOD = 0.1  # seconds between frames
JPEG_QUALITY = 95


def rgbd_topics(ns: str) -> Tuple[str, str, str]:
    """(compressed colour image, depth ground truth, camera_info) topics of namespace ``ns``."""
    return ("/%s/camera_node/image/compressed" % ns, "/%s/depth_gt/image_raw" % ns,
            "/%s/camera_node/camera_info" % ns)


def default_intrinsics(width: int, height: int, fx: Optional[float] = None, fy: Optional[float] = None,
                       cx: Optional[float] = None, cy: Optional[float] = None) -> Tuple[float, float, float, float]:
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
    if os.path.isdir(out):
        raise IsADirectoryError("%s is a directory, not a bag path" % out)
    if os.path.exists(out) and not force:
        raise FileExistsError("%s exists; pass force=True (--force) to replace it" % out)


def write_rgbd_bag(frames: Iterable[Tuple[object, object]], out: str, intrinsics: Sequence[float], ns: str = "rgbd",
                   start: float = DEFAULT_START, period: float = DEFAULT_PERIOD, jpeg: bool = False,
                   force: bool = False, frame_id: Optional[str] = None, total: Optional[int] = None,
                   progress: bool = True, desc: str = "frames") -> int:
    """Write ``frames`` -- (RGB uint8 HxWx3, depth metres HxW) pairs -- as one bag; returns the count.
    ``intrinsics`` is (fx, fy, cx, cy). All frames must have the size of the first one."""
    import cv2
    import numpy as np
    from rosbags.rosbag1 import Writer

    from depth_estimation.io.bags import typestore

    _check_out(out, force)
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    store = typestore()
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Compressed = store.types[IMAGE_TYPE]
    Image = store.types[DEPTH_TYPE]
    CameraInfo = store.types[INFO_TYPE]
    RegionOfInterest = store.types["sensor_msgs/msg/RegionOfInterest"]
    image_topic, depth_topic, info_topic = rgbd_topics(ns)
    frame_id = frame_id if frame_id is not None else "%s/camera_optical_frame" % ns
    ext, params, fmt = (".jpg", [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY], "jpeg") if jpeg else (".png", [], "png")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = out + ".partial"
    if os.path.exists(tmp):
        os.remove(tmp)
    start_ns, period_ns = int(round(start * 1e9)), int(round(period * 1e9))
    size = None
    count = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr)
    try:
        with Writer(tmp) as writer:
            c_img = writer.add_connection(image_topic, IMAGE_TYPE, typestore=store)
            c_depth = writer.add_connection(depth_topic, DEPTH_TYPE, typestore=store)
            c_info = writer.add_connection(info_topic, INFO_TYPE, typestore=store)
            for i, (rgb, depth) in enumerate(frames):
                rgb = np.asarray(rgb)
                depth = np.asarray(depth, dtype="<f4")
                if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                    raise ValueError("frame %d: colour image must be HxWx3 uint8, got %s %s"
                                     % (i, rgb.shape, rgb.dtype))
                if depth.shape != rgb.shape[:2]:
                    raise ValueError("frame %d: depth %s does not match colour %s" % (i, depth.shape, rgb.shape[:2]))
                if size is None:
                    size = depth.shape
                elif depth.shape != size:
                    raise ValueError("frame %d: size %s differs from the first frame's %s" % (i, depth.shape, size))
                height, width = size
                ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
                if not ok:
                    raise RuntimeError("frame %d: could not encode %s" % (i, fmt))
                ns_t = start_ns + i * period_ns
                header = Header(seq=i, stamp=Time(sec=ns_t // 10 ** 9, nanosec=ns_t % 10 ** 9), frame_id=frame_id)
                img = Compressed(header=header, format=fmt, data=np.asarray(buf, np.uint8).reshape(-1))
                dmsg = Image(header=header, height=height, width=width, encoding="32FC1", is_bigendian=0,
                             step=width * 4,
                             data=np.frombuffer(np.ascontiguousarray(depth).tobytes(), np.uint8))
                info = CameraInfo(
                    header=header, height=height, width=width, distortion_model="plumb_bob",
                    D=np.zeros(5, np.float64),
                    K=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64),
                    R=np.eye(3, dtype=np.float64).reshape(-1),
                    P=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], np.float64),
                    binning_x=0, binning_y=0,
                    roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
                writer.write(c_img, ns_t, store.serialize_ros1(img, IMAGE_TYPE))
                writer.write(c_depth, ns_t, store.serialize_ros1(dmsg, DEPTH_TYPE))
                writer.write(c_info, ns_t, store.serialize_ros1(info, INFO_TYPE))
                count += 1
                if bar is not None:
                    bar.update(1)
        if count == 0:
            raise ValueError("no frames to write to %s" % out)
        os.replace(tmp, out)
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return count


# --- NYU Depth v2 -------------------------------------------------------------------------------

def nyu_split_indices(splits_path: str, split: str, count: int) -> List[int]:
    """0-based frame indices of ``split`` ("test", "train" or "all") from the 1-based splits.mat."""
    if split not in NYU_SPLITS:
        raise ValueError("split must be one of %s, got %r" % (", ".join(NYU_SPLITS), split))
    if split == "all":
        return list(range(count))
    from scipy.io import loadmat

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
    import numpy as np

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
    import h5py

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
                       desc="nyu_%s" % split)
    return out


# --- colour + 16-bit depth files ----------------------------------------------------------------

def pair_rgbd_files(rgb_glob: str, depth_glob: str) -> List[Tuple[str, str]]:
    """(colour, depth) file pairs in sorted order; unequal or zero counts are an error."""
    rgbs, depths = sorted(glob.glob(os.path.expanduser(rgb_glob))), sorted(glob.glob(os.path.expanduser(depth_glob)))
    if len(rgbs) != len(depths):
        raise ValueError("%d colour images (%s) but %d depth images (%s): they are paired in sorted order, "
                         "so the counts must be equal" % (len(rgbs), rgb_glob, len(depths), depth_glob))
    if not rgbs:
        raise ValueError("no files match %s" % rgb_glob)
    return list(zip(rgbs, depths))


def _rgbd_frames(pairs: Sequence[Tuple[str, str]], depth_scale: float):
    import cv2
    import numpy as np

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
    import cv2

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
    write_rgbd_bag(_rgbd_frames(pairs, depth_scale), out, intrinsics, ns=ns, start=start, period=period, jpeg=jpeg,
                   force=force, total=len(pairs), progress=progress, desc=os.path.basename(out))
    return out


# --- command line -------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.convert_rgbd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")

    def common(p, ns):
        p.add_argument("--limit", type=int, default=None, help="at most N frames")
        p.add_argument("--jpeg", action="store_true", help="JPEG quality %d instead of lossless PNG" % JPEG_QUALITY)
        p.add_argument("--force", action="store_true", help="replace an existing output bag")
        p.add_argument("--ns", default=ns, help="topic namespace (default %s)" % ns)
        p.add_argument("--start", type=float, default=DEFAULT_START, help="stamp of frame 0, s")
        p.add_argument("--period", type=float, default=DEFAULT_PERIOD, help="seconds between frames")

    nyu = sub.add_parser("nyu", help="NYUv2 labeled .mat + splits.mat -> <out>/nyu_<split>.bag")
    nyu.add_argument("--mat", required=True, help="nyu_depth_v2_labeled.mat")
    nyu.add_argument("--splits", default=None, help="splits.mat (not needed for --split all)")
    nyu.add_argument("--out", required=True, help="output folder")
    nyu.add_argument("--split", default="test", choices=NYU_SPLITS)
    nyu.add_argument("--raw-depth", action="store_true", help="rawDepths (with holes) instead of depths")
    common(nyu, "nyu")

    rgbd = sub.add_parser("rgbd", help="colour + 16-bit depth images -> one bag")
    rgbd.add_argument("--rgb", required=True, help="glob of colour images (quote it)")
    rgbd.add_argument("--depth", required=True, help="glob of 16-bit depth PNG/PGM (quote it)")
    rgbd.add_argument("--depth-scale", type=float, required=True, help="value per metre: TUM 5000, KITTI 256, mm 1000")
    for name in ("fx", "fy", "cx", "cy"):
        rgbd.add_argument("--" + name, type=float, default=None)
    rgbd.add_argument("--out", required=True, help="output bag")
    common(rgbd, "rgbd")

    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.cmd == "nyu":
            out = nyu2bag(args.mat, args.splits, args.out, split=args.split, limit=args.limit, jpeg=args.jpeg,
                          force=args.force, ns=args.ns, start=args.start, period=args.period,
                          depth_key="rawDepths" if args.raw_depth else "depths")
        else:
            out = rgbd2bag(args.rgb, args.depth, args.depth_scale, args.out, args.fx, args.fy, args.cx, args.cy,
                           limit=args.limit, jpeg=args.jpeg, force=args.force, ns=args.ns, start=args.start,
                           period=args.period)
    except (OSError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("wrote %s" % out)
    return 0


def nyu_main() -> int:  # console script depth-nyu2bag
    return main(["nyu"] + sys.argv[1:])


def rgbd_main() -> int:  # console script depth-rgbd2bag
    return main(["rgbd"] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
