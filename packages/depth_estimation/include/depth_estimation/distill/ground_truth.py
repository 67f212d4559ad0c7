"""Ground truth as the label source: ``depth-distill label --teacher ground-truth --bags 'sim/*.bag'``.

The RGB-D bags of ``depth-sim2bag``, ``depth-rgbd2bag`` and ``depth-nyu2bag`` (camera frames as
CompressedImage, depth in metres as a 32FC1 or 16UC1 Image on the same stamp; topics found as
``depth-eval`` finds them) become label-cache items like a teacher's (layout:
:mod:`depth_estimation.distill.label_cache`): the frame's encoded bytes and, as the label, its
inverse depth ``1 / metres`` (relative inverse depth with scale 1; the loss is scale and shift
invariant either way), float16 at short side ``--label-size``, resized over the valid pixels
only. Depth 0 (or negative, NaN: no measurement) is NaN in the label, which training masks;
``+inf`` (a ray that hits nothing) is 0, far away, as a teacher labels the sky. ``--zero-depth``
says what a depth of 0 is: ``missing`` (a depth camera's hole: masked), ``far`` (0 in the label,
a valid target) or ``auto`` (the default): ``far`` in bags that record the ``duckietown-sim``
dataset, whose 0 is the sky or beyond the renderer's range (``depth-sim2bag``), else ``missing``.
A student that never sees the sky as far makes it up: the first student, labelled with the
sky masked, read the simulator's plain sky as near and stopped the closed loop at its first frame.

Bags with an obstacle mask beside the depth (``depth-sim2bag``'s ``depth_gt/obstacle_mask``) also
give each item the mask's share per label pixel (``<key>.obstacles.png``, see the cache layout), which
``depth-distill train --obstacle-weight`` uses to weigh obstacle pixels; labelling a cache again adds
the masks to items labelled before masks were cached.

Items are named, de-duplicated, sharded (``--shard i/n``) and resumed exactly as teacher labels
are; a cache holds one source only (ground truth or one teacher): mix them by training on
several caches (``depth-distill train --cache cache/real cache/sim``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from depth_estimation.distill import label_cache, sources
from depth_estimation.io.atomic import atomic_file, write_bytes
from depth_estimation.io.images import ImageHeaderError, image_size
from depth_estimation.io.bags import SIM_DATASET
from depth_estimation.io.rgbd import (bag_dataset, depth_from_msg, detect_topics, obstacle_truth,
                                      paired_frames, stamp_ns, unpack_mask)

log = logging.getLogger(__name__)

GROUND_TRUTH = "ground-truth"  # the --teacher value that names the bags' own depth as the labels
ZERO_DEPTH = ("auto", "far", "missing")  # --zero-depth: what a depth of 0 in the bags is


def inverse_depth_label(depth: np.ndarray, hw: Tuple[int, int], zero_far: bool = False) -> np.ndarray:
    """float32 ``hw`` label of a depth map in metres: 1/depth, 0 for +inf (and for 0 when
    ``zero_far``), NaN where no value."""
    depth = np.asarray(depth, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(depth > 0, 1.0 / depth, np.nan).astype(np.float32)  # +inf -> 0, NaN stays NaN
    if zero_far:
        inv[depth == 0] = 0.0
    return label_cache.resize_label(inv, int(hw[0]), int(hw[1]))


def zero_is_far(zero_depth: str, bag: str, depth_topic: str) -> bool:
    """Whether a depth of 0 in ``bag`` is far (see the module docstring)."""
    if zero_depth == "auto":
        return bag_dataset(bag, depth_topic) == SIM_DATASET
    return zero_depth == "far"


def rgbd_frames(bag: str, image_topic: str, depth_topic: str) -> Iterator[Tuple[str, bytes, object]]:
    """(``<bag>:<image topic>:<index>``, encoded image bytes, depth Image message) of every frame
    of an RGB-D bag whose image and depth share a stamp, in bag order."""
    unmatched: Dict[str, List[int]] = {"images": [], "depths": []}
    for index, (_stamp, image, depth) in enumerate(paired_frames(bag, image_topic, depth_topic, unmatched)):
        yield "%s:%s:%d" % (bag, image_topic, index), bytes(image.data), depth
    if unmatched["images"] or unmatched["depths"]:
        log.warning("%s: %d images and %d depth maps without a partner were left out", bag,
                    len(unmatched["images"]), len(unmatched["depths"]))


class GroundTruthWriter:
    """Writes (source, key, image bytes, depth message) items into ``cache``, counting them."""

    def __init__(self, cache: str, label_size: int, counts: Dict[str, int]):
        self.cache, self.label_size, self.counts = cache, int(label_size), counts
        self.indexed = label_cache.indexed_keys(cache)

    def write(self, source: str, key: str, data: bytes, depth_msg, zero_far: bool = False,
              obstacles: Optional[np.ndarray] = None) -> None:
        """``obstacles``: the frame's bool obstacle mask, when its bag has one."""
        npy = label_cache.item_path(self.cache, key, ".npy")
        try:
            height, width = image_size(data)
            if os.path.isfile(npy):  # labelled before; index it if a run stopped before its index line
                self.counts["skipped"] += 1
                hw = np.load(npy, mmap_mode="r").shape
                self._write_obstacles(key, obstacles, hw)
                if key not in self.indexed:
                    self._index(key, source, (height, width), hw)
                return
            depth = depth_from_msg(depth_msg)
        except (ImageHeaderError, ValueError, OSError) as exc:
            self.counts["failed"] += 1
            log.warning("skipping %s: %s", source, exc)
            return
        hw = label_cache.label_hw(height, width, self.label_size)
        img = label_cache.item_path(self.cache, key, ".img")
        if not os.path.isfile(img):
            write_bytes(img, data)
        self._write_obstacles(key, obstacles, hw)
        with atomic_file(npy, "wb") as f:
            np.save(f, inverse_depth_label(depth, hw, zero_far).astype(np.float16))
        self._index(key, source, (height, width), hw)
        self.counts["labelled"] += 1

    def _write_obstacles(self, key: str, obstacles: Optional[np.ndarray], hw: Tuple[int, int]) -> None:
        path = label_cache.item_path(self.cache, key, label_cache.OBSTACLES)
        if obstacles is not None and not os.path.isfile(path):
            write_bytes(path, label_cache.encode_obstacles(label_cache.obstacle_share(obstacles, hw)))

    def _index(self, key: str, source: str, rgb_hw: Tuple[int, int], hw: Tuple[int, int]) -> None:
        label_cache.append_index(self.cache, [label_cache.index_line(key, source, rgb_hw, hw, GROUND_TRUTH)])
        self.indexed.add(key)


def _check_cache(cache: str, zero_depth: str) -> None:
    recorded, has_labels = label_cache.read_teacher(cache), label_cache.has_labels(cache)
    if recorded and has_labels:
        if recorded.get("teacher") != GROUND_TRUTH:
            raise ValueError("cache %s holds labels of teacher %s, not ground truth; use another --cache "
                             "(train on both with --cache A B)" % (cache, recorded.get("teacher")))
        before = recorded.get("zero_depth", "missing")  # caches from before --zero-depth masked every 0
        if before != zero_depth:
            raise ValueError("cache %s holds labels made with --zero-depth %s, not %s; use another --cache"
                             % (cache, before, zero_depth))
    os.makedirs(cache, exist_ok=True)
    if not recorded or not has_labels:
        label_cache.write_teacher(cache, GROUND_TRUTH, "", 0, zero_depth=zero_depth)


def label_ground_truth(cache: str, bags: str, label_size: int = 384, shard: Sequence[int] = (0, 1),
                       topic: Optional[str] = None, progress: bool = True,
                       zero_depth: str = "auto") -> Dict[str, int]:
    """Label this shard's frames of the RGB-D bags ``bags`` (a glob) with their own depth into
    ``cache`` (``zero_depth``: see the module docstring). Returns counts like the teacher's
    :func:`.labels.label`: ``seen`` (unique frames of this shard) = ``labelled`` + ``skipped``
    (already cached) + ``failed`` (warned about)."""
    i_shard, n_shard = int(shard[0]), int(shard[1])
    if not 0 <= i_shard < n_shard:
        raise ValueError("shard %d/%d: need 0 <= i < n" % (i_shard, n_shard))
    if int(label_size) < 1:
        raise ValueError("label_size must be positive")
    if zero_depth not in ZERO_DEPTH:
        raise ValueError("zero_depth %r: one of %s" % (zero_depth, ", ".join(ZERO_DEPTH)))
    cache = os.path.abspath(os.path.expanduser(cache))
    bag_paths = sources.list_bags(bags)
    _check_cache(cache, zero_depth)
    counts = {"seen": 0, "labelled": 0, "skipped": 0, "failed": 0}
    writer = GroundTruthWriter(cache, label_size, counts)
    seen, position = set(), 0
    with tqdm(desc="ground truth", unit="frame", disable=not progress) as bar:
        for bag in bag_paths:
            image_topic, depth_topic = detect_topics(bag, image_topic=topic)
            zero_far = zero_is_far(zero_depth, bag, depth_topic)
            masks, _distances = obstacle_truth(bag, depth_topic)
            log.info("%s: depth 0 is %s; %d obstacle masks", bag,
                     "far (0 in the label)" if zero_far else "missing (masked)", len(masks))
            for source, data, depth_msg in rgbd_frames(bag, image_topic, depth_topic):
                key = hashlib.sha1(data).hexdigest()
                if key in seen:
                    continue
                seen.add(key)
                position += 1
                if (position - 1) % n_shard != i_shard:
                    continue
                counts["seen"] += 1
                packed = masks.get(stamp_ns(depth_msg))
                writer.write(source, key, data, depth_msg, zero_far,
                             None if packed is None else unpack_mask(packed))
                bar.update(1)
    return counts
