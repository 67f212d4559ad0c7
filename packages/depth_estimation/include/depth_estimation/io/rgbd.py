"""RGB-D bags read without ROS (``rosbags``): the camera and ground-truth topics, frames paired by
stamp and ground-truth depth messages as metres. Shared by ``depth-eval`` (which scores models on
such bags) and ``depth-distill`` (which learns from their depth).

The layout (written by ``depth-rgbd2bag``, ``depth-nyu2bag`` and ``depth-sim2bag``): camera frames
on ``/<ns>/camera_node/image/compressed`` (sensor_msgs/CompressedImage, PNG or JPEG), ground truth
on ``/<ns>/depth_gt/image_raw`` (sensor_msgs/Image, 32FC1 metres; 16UC1 millimetres also read; 0 =
no measurement) with the same header stamps.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from depth_estimation.io import bags

COMPRESSED_TYPE = bags.IMAGE_TYPE
IMAGE_TYPE = bags.DEPTH_TYPE


def depth_from_msg(msg, what: str = "ground truth", millimetres: bool = True) -> np.ndarray:
    """A sensor_msgs/Image (32FC1 metres, or 16UC1 millimetres when ``millimetres``) as float32 HxW
    metres (0 = no data), its ``step`` (row padding) and ``is_bigendian`` honoured; ``what`` names it
    in errors (a depth_node prediction is 32FC1 only: ``millimetres=False``)."""
    encoding = str(msg.encoding)
    if encoding == "32FC1":
        dtype, scale = np.dtype(np.float32), 1.0
    elif encoding == "16UC1" and millimetres:
        dtype, scale = np.dtype(np.uint16), 1e-3
    else:
        raise ValueError("%s encoding %s; expected 32FC1%s" % (what, encoding, " (metres) or 16UC1 "
                                                               "(millimetres)" if millimetres else ""))
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = msg.data  # bytes from rospy, a uint8 array from rosbags
    if isinstance(data, (bytes, bytearray)):
        raw = np.frombuffer(data, np.uint8)
    else:
        raw = np.asarray(data, np.uint8)
    if raw.size < height * step or step < width * dtype.itemsize:
        raise ValueError("%s image of %d bytes does not hold %dx%d %s (step %d)"
                         % (what, raw.size, height, width, encoding, step))
    rows = raw[: height * step].reshape(height, step)[:, : width * dtype.itemsize]
    depth = np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.float32)
    return depth * np.float32(scale) if scale != 1.0 else depth


def topics_by_type(path: str) -> Dict[str, List[str]]:
    """{message type: [topics, in connection order]} of a bag."""
    from rosbags.rosbag1 import Reader  # optional: only bag readers need it

    found: Dict[str, List[str]] = {}
    with Reader(path) as reader:
        for conn in reader.connections:
            topics = found.setdefault(conn.msgtype, [])
            if conn.topic not in topics:
                topics.append(conn.topic)
    return found


def _depth_encoding(path: str, topic: str) -> Optional[str]:
    for _topic, _t, msg in bags.iter_messages(path, [topic]):
        return str(msg.encoding)
    return None


def _pick(path: str, candidates: List[str], suffix: str, what: str) -> str:
    """The one candidate topic, or the one ending in ``suffix``; ValueError naming the flag otherwise."""
    if len(candidates) == 1:
        return candidates[0]
    preferred = [t for t in candidates if t.endswith(suffix)]
    if len(preferred) == 1:
        return preferred[0]
    raise ValueError("%s has %s %s topics (%s); choose one with --%s-topic" % (
        path, "no" if not candidates else "several", what, ", ".join(candidates) or "-",
        "image" if what == "CompressedImage" else "depth"))


def detect_topics(path: str, image_topic: Optional[str] = None,
                  depth_topic: Optional[str] = None) -> Tuple[str, str]:
    """The camera and ground-truth topics: as given, else the single CompressedImage topic and
    the single 32FC1/16UC1 Image topic (``/<ns>/camera_node/image/compressed`` and
    ``/<ns>/depth_gt/image_raw`` preferred when there are several)."""
    found = topics_by_type(path)
    all_topics = {t for ts in found.values() for t in ts}
    for given in (image_topic, depth_topic):
        if given is not None and given not in all_topics:
            raise ValueError("topic %s is not in %s (topics: %s)"
                             % (given, path, ", ".join(sorted(all_topics))))
    if image_topic is None:
        image_topic = _pick(path, found.get(COMPRESSED_TYPE, []), bags.IMAGE_SUFFIX, "CompressedImage")
    if depth_topic is None:
        images = found.get(IMAGE_TYPE, [])
        depth = [t for t in images if t.endswith(bags.DEPTH_SUFFIX)]
        if len(depth) != 1:
            depth = [t for t in images if _depth_encoding(path, t) in ("32FC1", "16UC1")]
        depth_topic = _pick(path, depth, bags.DEPTH_SUFFIX, "32FC1 Image")
    return image_topic, depth_topic


def stamp_ns(msg) -> int:
    """A message's header stamp in integer nanoseconds (rosbags' sec/nanosec or rospy's secs/nsecs)."""
    stamp = msg.header.stamp
    if hasattr(stamp, "nanosec"):
        return int(stamp.sec) * 10 ** 9 + int(stamp.nanosec)
    return int(stamp.secs) * 10 ** 9 + int(stamp.nsecs)


def paired_frames(path: str, image_topic: str, depth_topic: str,
                  unmatched: Dict[str, List[int]]) -> Iterator:
    """(stamp_ns, CompressedImage, depth Image) for every stamp seen on both topics, in bag order.
    Stamps seen on one topic only end up in ``unmatched["images"]`` / ``unmatched["depths"]``."""
    pending = {image_topic: {}, depth_topic: {}}  # type: Dict[str, Dict[int, object]]
    for topic, _t, msg in bags.iter_messages(path, [image_topic, depth_topic]):
        stamp = stamp_ns(msg)
        other = depth_topic if topic == image_topic else image_topic
        partner = pending[other].pop(stamp, None)
        if partner is None:
            if stamp in pending[topic]:  # a repeated stamp: the earlier message stays unpaired
                unmatched["images" if topic == image_topic else "depths"].append(stamp)
            pending[topic][stamp] = msg
            continue
        yield (stamp, msg, partner) if topic == image_topic else (stamp, partner, msg)
    unmatched["images"].extend(sorted(pending[image_topic]))
    unmatched["depths"].extend(sorted(pending[depth_topic]))


def obstacle_topics_beside(depth_topic: str) -> Tuple[str, str]:
    """(obstacle distance, obstacle mask) ground-truth topics beside ``depth_topic`` (same namespace;
    ``depth-sim2bag`` writes them)."""
    ns = depth_topic[:-len(bags.DEPTH_SUFFIX)] if depth_topic.endswith(bags.DEPTH_SUFFIX) else \
        depth_topic.rsplit("/", 2)[0]
    return bags.obstacle_topics(ns.strip("/"))


PackedMask = Tuple[np.ndarray, Tuple[int, int]]


def obstacle_truth(path: str, depth_topic: str) -> Tuple[Dict[int, PackedMask], Dict[int, float]]:
    """The obstacle ground truth beside ``depth_topic`` by header stamp: masks (bit-packed with their
    shape, :func:`unpack_mask`; mono8 nonzero = obstacle) and distances in metres (inf = none);
    both empty for a bag without them."""
    range_topic, mask_topic = obstacle_topics_beside(depth_topic)
    masks, distances = {}, {}  # type: Dict[int, PackedMask], Dict[int, float]
    for topic, _t, msg in bags.iter_messages(path, [range_topic, mask_topic]):
        if topic == range_topic:
            distances[stamp_ns(msg)] = float(msg.range)
        else:
            mask = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width] > 0
            masks[stamp_ns(msg)] = np.packbits(mask, axis=None), mask.shape
    return masks, distances


def unpack_mask(packed: PackedMask) -> np.ndarray:
    """The bool HxW mask of :func:`obstacle_truth`'s packed form."""
    bits, shape = packed
    return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)


def bag_dataset(path: str, depth_topic: str) -> Optional[str]:
    """The dataset ``path`` records for ``depth_topic`` (std_msgs/String on ``/<ns>/dataset``, written
    by the converters), or None for a bag without that record."""
    topic = bags.pick_dataset_topic(topics_by_type(path).get(bags.STRING_TYPE, []), depth_topic)
    if topic is not None:
        for _topic, _t, msg in bags.iter_messages(path, [topic]):
            return str(msg.data)
    return None
