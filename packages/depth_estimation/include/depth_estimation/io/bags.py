"""ROS 1 bags without a ROS install (the ``rosbags`` library): topic names, message builders,
atomic bag writing, reading camera frames, and camera-stream bags.

Every bag this package writes goes through :func:`write_bag` (a unique temporary file beside the
output, fsynced and renamed into place by :func:`depth_estimation.io.atomic.atomic_path`) with
messages from one :class:`MessageBuilder`; :func:`check_new_bag` refuses to replace an existing
bag unless told to. ``camera_stream_bag`` re-stamps real camera frames into a Duckiebot-style
stream (image and camera_info with the same stamp, at camera rate), optionally with bad frames
interleaved, for ``make demo`` and the rostests; the RGB-D converters write evaluation bags.

    python3 -m depth_estimation.io.bags SRC.bag OUT.bag --veh duckiebot --seconds 10 --rate 30
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from depth_estimation.io.atomic import atomic_path

IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
DEPTH_TYPE = "sensor_msgs/msg/Image"
EMPTY_TYPE = "std_msgs/msg/Empty"
END_TOPIC = "/stream_end"
IMAGE_SUFFIX = "/camera_node/image/compressed"
INFO_SUFFIX = "/camera_node/camera_info"
DEPTH_SUFFIX = "/depth_gt/image_raw"
RANGE_TYPE = "sensor_msgs/msg/Range"
#: Simulated bags (depth-sim2bag) add the closest obstacle ahead (sensor_msgs/Range, +inf = none) and
#: a mono8 obstacle mask (255 = object, 0 = road, ground or sky) to the RGB-D layout.
OBSTACLE_SUFFIX = "/obstacle_gt"
MASK_SUFFIX = "/depth_gt/obstacle_mask"
#: The RGB-D converters record which dataset a bag holds: one std_msgs/String on ``/<ns>/dataset``
#: (:func:`dataset_topic`): "nyu" (depth-nyu2bag), "rgbd" (depth-rgbd2bag), :data:`SIM_DATASET`.
STRING_TYPE = "std_msgs/msg/String"  # rosbags' name; ROS' rosbag says std_msgs/String
DATASET_SUFFIX = "/dataset"
SIM_DATASET = "duckietown-sim"  # depth-sim2bag's: its depth 0 is the sky or beyond its range

Write = Callable[[str, int, object], None]


def dataset_topic(depth_topic: str) -> str:
    """Where an RGB-D bag records its dataset: ``/<ns>/dataset`` beside ``/<ns>/depth_gt/image_raw``
    (beside the ground-truth topic's last component for other topic names)."""
    if depth_topic.endswith(DEPTH_SUFFIX):
        return depth_topic[:-len(DEPTH_SUFFIX)] + DATASET_SUFFIX
    return depth_topic.rsplit("/", 1)[0] + DATASET_SUFFIX


def pick_dataset_topic(string_topics: Iterable[str], depth_topic: str) -> Optional[str]:
    """Of a bag's String topics, the one recording the dataset of ``depth_topic``'s bag: its own
    :func:`dataset_topic`, else the only ``.../dataset`` topic; None when there is none (a bag
    written before the converters recorded it)."""
    candidates = [t for t in string_topics if t.endswith(DATASET_SUFFIX)]
    if dataset_topic(depth_topic) in candidates:
        return dataset_topic(depth_topic)
    return candidates[0] if len(candidates) == 1 else None


def typestore():
    from rosbags.typesys import Stores, get_typestore  # optional: only bag readers and writers need it

    return get_typestore(Stores.ROS1_NOETIC)


# --- topics and messages -------------------------------------------------------------------------

def camera_topics(veh: str) -> Tuple[str, str]:
    """(compressed image, camera_info) topics of a Duckiebot camera in namespace ``veh``."""
    return "/%s%s" % (veh, IMAGE_SUFFIX), "/%s%s" % (veh, INFO_SUFFIX)


def rgbd_topics(ns: str) -> Tuple[str, str, str]:
    """(compressed colour image, depth ground truth, camera_info) topics of an RGB-D bag."""
    image_topic, info_topic = camera_topics(ns)
    return image_topic, "/%s%s" % (ns, DEPTH_SUFFIX), info_topic


def obstacle_topics(ns: str) -> Tuple[str, str]:
    """(obstacle distance, obstacle mask) ground-truth topics of a simulated bag."""
    return "/%s%s" % (ns, OBSTACLE_SUFFIX), "/%s%s" % (ns, MASK_SUFFIX)


class MessageBuilder:
    """The messages this package writes into bags, all from one typestore."""

    def __init__(self, store=None):
        self.store = store if store is not None else typestore()

    def header(self, seq: int, stamp_ns: int, frame_id: str):
        """A std_msgs/Header stamped with integer nanoseconds (no float rounding)."""
        types = self.store.types
        stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10 ** 9, nanosec=stamp_ns % 10 ** 9)
        return types["std_msgs/msg/Header"](seq=seq, stamp=stamp, frame_id=frame_id)

    def compressed_image(self, header, fmt: str, data):
        """A sensor_msgs/CompressedImage of encoded bytes (``fmt`` "jpeg", "png", ...)."""
        payload = np.frombuffer(bytes(data), np.uint8)
        return self.store.types[IMAGE_TYPE](header=header, format=fmt, data=payload)

    def camera_info(self, header, width: int, height: int, intrinsics: Sequence[float],
                    D: Optional[Sequence[float]] = None):
        """A ``plumb_bob`` sensor_msgs/CameraInfo, K / P from ``intrinsics`` (fx, fy, cx, cy), R =
        identity, distortion ``D`` (5 numbers; None = zero distortion)."""
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        D = np.zeros(5, np.float64) if D is None else np.asarray(D, np.float64).reshape(-1)
        types = self.store.types
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                        do_rectify=False)
        return types[INFO_TYPE](
            header=header, height=int(height), width=int(width), distortion_model="plumb_bob",
            D=D, K=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64),
            R=np.eye(3, dtype=np.float64).reshape(-1),
            P=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], np.float64),
            binning_x=0, binning_y=0, roi=roi)

    def depth_image(self, header, depth: np.ndarray):
        """A ``32FC1`` little-endian sensor_msgs/Image of depth in metres (HxW)."""
        depth = np.ascontiguousarray(depth, dtype="<f4")
        height, width = depth.shape
        return self.store.types[DEPTH_TYPE](
            header=header, height=height, width=width, encoding="32FC1", is_bigendian=0, step=width * 4,
            data=np.frombuffer(depth.tobytes(), np.uint8))

    def mono8(self, header, image: np.ndarray):
        """A ``mono8`` sensor_msgs/Image (HxW uint8)."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        height, width = image.shape
        return self.store.types[DEPTH_TYPE](
            header=header, height=height, width=width, encoding="mono8", is_bigendian=0, step=width,
            data=image.reshape(-1))

    def range(self, header, distance: float, field_of_view: float, min_range: float, max_range: float):
        """A sensor_msgs/Range (INFRARED, as the DB21's time-of-flight sensor); ``distance`` inf = none."""
        return self.store.types[RANGE_TYPE](header=header, radiation_type=1,
                                            field_of_view=float(field_of_view), min_range=float(min_range),
                                            max_range=float(max_range), range=float(distance))

    def empty(self):
        return self.store.types[EMPTY_TYPE]()

    def string(self, data: str):
        """A std_msgs/String (an RGB-D bag records its dataset in one)."""
        return self.store.types["std_msgs/msg/String"](data=str(data))

    @staticmethod
    def restamped(msg, header):
        """A copy of ``msg`` (a rosbags message) with ``header``."""
        return dataclasses.replace(msg, header=header)


# --- writing -------------------------------------------------------------------------------------

def check_new_bag(out: str, overwrite: bool, how: str = "overwrite=True (or --force)") -> None:
    """Refuse a directory, and an existing ``out`` unless ``overwrite`` (``how`` says how to ask)."""
    if os.path.isdir(out):
        raise IsADirectoryError("%s is a directory, not a bag path" % out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError("%s exists; pass %s to replace it" % (out, how))


@contextmanager
def write_bag(out: str, topics: Sequence[Tuple[str, str]], store=None) -> Iterator[Write]:
    """A ROS 1 bag with one connection per (topic, message type) of ``topics``, written to a
    temporary file and renamed onto ``out`` only when the block succeeds. Yields
    ``write(topic, bag_time_ns, msg)``. Call :func:`check_new_bag` first: this replaces ``out``."""
    from rosbags.rosbag1 import Writer  # optional: only bag writers need it

    store = store if store is not None else typestore()
    with atomic_path(out) as tmp, Writer(tmp) as writer:
        conns = {topic: (writer.add_connection(topic, msgtype, typestore=store), msgtype)
                 for topic, msgtype in topics}

        def write(topic: str, time_ns: int, msg) -> None:
            conn, msgtype = conns[topic]
            writer.write(conn, time_ns, store.serialize_ros1(msg, msgtype))

        yield write


# --- camera frames and streams -------------------------------------------------------------------

@dataclasses.dataclass
class CameraFrame:
    data: bytes
    format: str
    frame_id: str
    camera_info: object  # rosbags CameraInfo message or None


def read_camera_frames(path: str, limit: Optional[int] = None) -> List[CameraFrame]:
    """The CompressedImage frames of a bag, each with the newest CameraInfo seen before or with it."""
    from rosbags.rosbag1 import Reader  # optional: only bag readers need it

    store, frames, infos = typestore(), [], {}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.msgtype in (IMAGE_TYPE, INFO_TYPE)]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = store.deserialize_ros1(raw, conn.msgtype)
            if conn.msgtype == INFO_TYPE:
                infos[msg.header.frame_id] = msg
                continue
            frames.append(CameraFrame(bytes(msg.data), msg.format, msg.header.frame_id, None))
            if limit and len(frames) >= limit:
                break
    for frame in frames:  # camera_info may come before or after its frame in the bag
        frame.camera_info = infos.get(frame.frame_id)
    return frames


def camera_stream_bag(frames: Sequence[CameraFrame], out: str, veh: str = "duckiebot", count: int = 30,
                      rate: float = 30.0, start: float = 1.7e9, bad: Optional[Dict[int, bytes]] = None,
                      tail: float = 0.0, overwrite: bool = False, stamped: bool = True) -> List[int]:
    """Write ``count`` frames (cycling through ``frames``) at ``rate`` Hz; frame i of ``bad`` gets
    those bytes instead. ``tail`` > 0 adds that many seconds of ``/stream_end`` (std_msgs/Empty,
    every 0.25 s) after the last frame, so a ``--clock`` replay keeps time running while the
    last frames are processed and listeners know the stream is over.
    Returns the stamps (integer nanoseconds) of all frames written, in order."""
    check_new_bag(out, overwrite)
    build, bad = MessageBuilder(), bad or {}
    image_topic, info_topic = camera_topics(veh)
    topics = [(image_topic, IMAGE_TYPE), (info_topic, INFO_TYPE), (END_TOPIC, EMPTY_TYPE)]
    stamps = []
    with write_bag(out, topics, build.store) as write:
        for i in range(count):
            frame = frames[i % len(frames)]
            ns = int(round(start * 1e9)) + int(round(i * 1e9 / rate))  # integer ns: no float drift
            header = build.header(i, ns if stamped else 0, frame.frame_id)
            if frame.camera_info is not None:
                write(info_topic, ns, build.restamped(frame.camera_info, header))
            write(image_topic, ns, build.compressed_image(header, frame.format, bad.get(i, frame.data)))
            stamps.append(ns)
        for k in range(1, int(tail / 0.25) + 1):
            write(END_TOPIC, int(round((start + (count - 1) / rate + 0.25 * k) * 1e9)), build.empty())
    return stamps


def bag_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a ROS 1 bag these tools can read, as one line, or None."""
    from rosbags.rosbag1 import Reader  # optional: only bag readers need it

    if not os.path.isfile(path):
        return "%s: no such file" % path
    try:
        with Reader(path) as reader:
            reader.connections  # noqa: B018 - reading the index is the check
    except Exception as exc:  # noqa: BLE001 - rosbags' ReaderError and whatever a foreign file raises
        cause = " ".join(str(exc).split()) or type(exc).__name__
        return ("%s is not a readable ROS 1 bag (%s); a bag whose recorder was stopped before it wrote "
                "its index is repaired with: rosbag reindex %s" % (path, cause, path))
    return None


def iter_messages(path: str, topics: Optional[Sequence[str]] = None) -> Iterator:
    """(topic, receive time in s, deserialized message) for every message of ``topics`` in a bag."""
    from rosbags.rosbag1 import Reader  # optional: only bag readers need it

    store = typestore()
    with Reader(path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if not conns:  # rosbags reads every connection for an empty list
            return
        for conn, t, raw in reader.messages(connections=conns):
            yield conn.topic, t / 1e9, store.deserialize_ros1(raw, conn.msgtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.io.bags", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="a bag with sensor_msgs/CompressedImage frames")
    parser.add_argument("out", help="the bag to write")
    parser.add_argument("--veh", default="duckiebot")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    frames = read_camera_frames(args.src)
    if not frames:
        print("error: %s has no sensor_msgs/CompressedImage frames" % args.src, file=sys.stderr)
        return 1
    try:
        stamps = camera_stream_bag(frames, args.out, args.veh, int(args.seconds * args.rate), args.rate,
                                   overwrite=args.force)
    except OSError as exc:  # FileExistsError without --force, IsADirectoryError, disk errors
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("wrote %d frames at %.1f Hz on %s to %s"
          % (len(stamps), args.rate, camera_topics(args.veh)[0], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
