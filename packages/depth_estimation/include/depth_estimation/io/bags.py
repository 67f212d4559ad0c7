"""ROS 1 bags without a ROS install (the ``rosbags`` library): read camera frames, write streams.

``camera_stream_bag`` re-stamps real camera frames into a Duckiebot-style stream (image and
camera_info with the same stamp, at camera rate), optionally with bad frames interleaved, for
``make demo`` and the rostests. Bags are written to a temporary file and renamed into place.

    python3 -m depth_estimation.io.bags SRC.bag OUT.bag --veh duckiebot --seconds 10 --rate 30
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
END_TOPIC = "/stream_end"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC)


@dataclass
class CameraFrame:
    data: bytes
    format: str
    frame_id: str
    camera_info: object  # rosbags CameraInfo message or None


def read_camera_frames(path: str, limit: Optional[int] = None) -> List[CameraFrame]:
    """The CompressedImage frames of a bag, each with the newest CameraInfo seen before or with it."""
    from rosbags.rosbag1 import Reader

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


def camera_topics(veh: str):
    return "/%s/camera_node/image/compressed" % veh, "/%s/camera_node/camera_info" % veh


def camera_stream_bag(frames: Sequence[CameraFrame], out: str, veh: str = "duckiebot", count: int = 30,
                      rate: float = 30.0, start: float = 1.7e9, bad: Optional[Dict[int, bytes]] = None,
                      tail: float = 0.0, overwrite: bool = False) -> List[int]:
    """Write ``count`` frames (cycling through ``frames``) at ``rate`` Hz; frame i of ``bad`` gets
    those bytes instead. ``tail`` > 0 adds that many seconds of ``/stream_end`` (std_msgs/Empty,
    every 0.25 s) after the last frame, so a ``--clock`` replay keeps time running while the
    last frames are processed and listeners know the stream is over.
    Returns the stamps (integer nanoseconds) of all frames written, in order."""
    import dataclasses

    import numpy as np
    from rosbags.rosbag1 import Writer

    if os.path.exists(out) and not overwrite:
        raise FileExistsError("%s exists; pass overwrite=True (or --force) to replace it" % out)
    store, bad = typestore(), bad or {}
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Compressed = store.types[IMAGE_TYPE]
    image_topic, info_topic = camera_topics(veh)
    tmp = out + ".partial"
    if os.path.exists(tmp):
        os.remove(tmp)
    stamps = []
    with Writer(tmp) as writer:
        c_img = writer.add_connection(image_topic, IMAGE_TYPE, typestore=store)
        c_info = writer.add_connection(info_topic, INFO_TYPE, typestore=store)
        c_end = writer.add_connection(END_TOPIC, "std_msgs/msg/Empty", typestore=store)
        for i in range(count):
            frame = frames[i % len(frames)]
            ns = int(round(start * 1e9)) + int(round(i * 1e9 / rate))  # integer ns: no float drift
            header = Header(seq=i, stamp=Time(sec=ns // 10 ** 9, nanosec=ns % 10 ** 9), frame_id=frame.frame_id)
            msg = Compressed(header=header, format=frame.format, data=np.frombuffer(bad.get(i, frame.data), np.uint8))
            if frame.camera_info is not None:
                info = dataclasses.replace(frame.camera_info, header=header)
                writer.write(c_info, ns, store.serialize_ros1(info, INFO_TYPE))
            writer.write(c_img, ns, store.serialize_ros1(msg, IMAGE_TYPE))
            stamps.append(ns)
        empty = store.serialize_ros1(store.types["std_msgs/msg/Empty"](), "std_msgs/msg/Empty")
        for k in range(1, int(tail / 0.25) + 1):
            writer.write(c_end, int(round((start + (count - 1) / rate + 0.25 * k) * 1e9)), empty)
    os.replace(tmp, out)
    return stamps


def iter_messages(path: str, topics: Optional[Sequence[str]] = None) -> Iterator:
    """(topic, receive time in s, deserialized message) for every message of ``topics`` in a bag."""
    from rosbags.rosbag1 import Reader

    store = typestore()
    with Reader(path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
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
    except FileExistsError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("wrote %d frames at %.1f Hz on %s to %s" % (len(stamps), args.rate, camera_topics(args.veh)[0], args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
