"""Where teacher labels come from: a folder of images or ROS 1 bags, as items in a fixed order.

Images are ``.jpg``/``.jpeg``/``.png`` files searched recursively, in sorted path order; bag items
are the ``sensor_msgs/CompressedImage`` frames of sorted bags in bag order (read with rosbags),
named ``<bag>:<topic>:<index on that topic>``.
"""
from __future__ import annotations

import functools
import glob
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from depth_estimation.io import bags as bagio

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def list_images(folder: str) -> List[str]:
    if not os.path.isdir(folder):
        raise ValueError("--images %s: not a directory" % folder)
    found = [os.path.abspath(os.path.join(root, name)) for root, _dirs, names in os.walk(folder)
             for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def list_bags(pattern: str) -> List[str]:
    found = sorted(os.path.abspath(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(p))
    if not found:
        raise ValueError("--bags %s: no such bag" % pattern)
    return found


def bag_frames(path: str, topic: Optional[str] = None) -> Iterator[Tuple[str, bytes]]:
    """(``<bag>:<topic>:<index>``, encoded bytes) of the CompressedImage frames of a bag, in bag order."""
    from rosbags.rosbag1 import Reader  # optional: only --bags needs rosbags

    store = bagio.typestore()
    counts: Dict[str, int] = {}
    with Reader(path) as reader:
        conns = [c for c in reader.connections
                 if c.msgtype == bagio.IMAGE_TYPE and (topic is None or c.topic == topic)]
        if not conns:
            return
        for conn, _t, raw in reader.messages(connections=conns):
            index = counts[conn.topic] = counts.get(conn.topic, -1) + 1
            data = bytes(store.deserialize_ros1(raw, conn.msgtype).data)
            yield "%s:%s:%d" % (path, conn.topic, index), data


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _given(data: bytes) -> bytes:
    return data


def stream(images: Sequence[str], bags: Sequence[str],
           topic: Optional[str]) -> Iterator[Tuple[str, str, Callable[[], bytes]]]:
    """(source, bag or "", loader of the bytes) for every item, in the fixed order: images are
    read only when their loader is called (so a caller may hash them without keeping them)."""
    for path in images:
        yield path, "", functools.partial(read_file, path)
    for bag in bags:
        for source, data in bag_frames(bag, topic):
            yield source, bag, functools.partial(_given, data)
