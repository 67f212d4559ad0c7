"""The label cache: teacher labels on disk, the contract between labelling and training.

Layout (``key`` = SHA-1 hex of the item's encoded bytes):

* ``<cache>/teacher.json``: ``{"teacher", "backend", "input_size"}``, the teacher spec
  (local paths made absolute), the backend of the first run and the network input short side
  (ground truth adds ``zero_depth``, what a depth of 0 became).
  A run with another teacher or input size on a cache holding labels raises ValueError.
* ``<cache>/items/<key[:2]>/<key>.img``: the encoded image bytes as found (JPEG or PNG).
* ``<cache>/items/<key[:2]>/<key>.npy``: float16 h x w relative inverse depth (larger = closer),
  the teacher's output at the image's size resized (bilinear) to the image's aspect with short
  side ``min(label_size, image short side)`` (:func:`label_hw`). Ground-truth labels (teacher
  ``ground-truth``: :mod:`depth_estimation.distill.ground_truth`) are 1 / metres with NaN where
  the ground truth has no value; every reader resizes labels with :func:`resize_label`. Written
  atomically (a unique temporary file, renamed: :mod:`depth_estimation.io.atomic`): it exists
  whole or not at all, and an item whose ``.npy`` exists is never labelled again.
* ``<cache>/items/<key[:2]>/<key>.obstacles.png`` (ground truth of bags with an obstacle mask,
  ``depth-sim2bag``'s, only): 8-bit PNG at the label's size, the share of each label pixel that the
  bag's obstacle mask covers (0-255), for ``depth-distill train --obstacle-weight``
  (:func:`load_obstacles`; an item without it has no obstacle pixels). Written atomically before
  the ``.npy``, or added to an item labelled before masks were cached.
* ``<cache>/index.jsonl``: one JSON line per labelled item, appended after its ``.npy`` is in
  place: ``{"key", "source", "width", "height", "label_hw": [h, w], "teacher"}``, ``source``
  being the image's path or ``<bag>:<topic>:<index on that topic>``. Readers skip lines whose
  files are missing and repeated keys (:func:`iter_cache`, :func:`load_item`).

Several labelling processes (shards) may share one cache: files are written under unique
temporary names and index lines are appended with one write each.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Optional, Set, Tuple

import cv2
import numpy as np

from depth_estimation.io.atomic import write_json


def item_path(cache: str, key: str, ext: str) -> str:
    return os.path.join(cache, "items", key[:2], key + ext)


def label_hw(height: int, width: int, label_size: int) -> Tuple[int, int]:
    """The label's (h, w): the image's aspect, short side ``min(label_size, short side)``."""
    short = min(int(label_size), height, width)
    if height <= width:
        return short, max(1, int(round(width * short / float(height))))
    return max(1, int(round(height * short / float(width)))), short


def resize_label(label: np.ndarray, h: int, w: int) -> np.ndarray:
    """``label`` (float32, NaN = no value) at h x w: area interpolation when shrinking, bilinear
    when growing, averaged over the valid pixels only; NaN where less than half the support is
    valid. Without NaN it is plain ``cv2.resize``."""
    if label.shape[:2] == (h, w):
        return label
    shrink = h * w < label.shape[0] * label.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    valid = np.isfinite(label)
    if valid.all():
        return cv2.resize(label, (w, h), interpolation=interp)
    weight = cv2.resize(valid.astype(np.float32), (w, h), interpolation=interp)
    total = cv2.resize(np.where(valid, label, 0).astype(np.float32), (w, h), interpolation=interp)
    out = np.full((h, w), np.nan, np.float32)
    keep = weight >= 0.5
    out[keep] = total[keep] / weight[keep]
    return out


def read_teacher(cache: str) -> Optional[Dict]:
    try:
        with open(os.path.join(cache, "teacher.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_teacher(cache: str, teacher: str, backend: str, input_size: int, **extra) -> None:
    """``extra``: what else decides the labels (ground truth: ``zero_depth``)."""
    write_json(os.path.join(cache, "teacher.json"),
               dict({"teacher": teacher, "backend": backend, "input_size": input_size}, **extra), indent=1)


def indexed_keys(cache: str) -> Set[str]:
    return {entry["key"] for entry in _index_lines(cache)}


def _index_lines(cache: str) -> Iterator[Dict]:
    try:
        with open(os.path.join(cache, "index.jsonl")) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if isinstance(entry, dict) and "key" in entry:
            yield entry


def has_labels(cache: str) -> bool:
    if any(True for _ in _index_lines(cache)):
        return True
    items = os.path.join(cache, "items")
    return os.path.isdir(items) and any(name.endswith(".npy") for sub in os.listdir(items)
                                        if os.path.isdir(os.path.join(items, sub))
                                        for name in os.listdir(os.path.join(items, sub)))


def iter_cache(cache: str) -> Iterator[Dict]:
    """The index entries of a cache whose ``.img`` and ``.npy`` are there, each key once."""
    seen = set()
    for entry in _index_lines(cache):
        key = entry["key"]
        if key in seen or not (os.path.isfile(item_path(cache, key, ".npy"))
                               and os.path.isfile(item_path(cache, key, ".img"))):
            continue
        seen.add(key)
        yield entry


def load_item(cache: str, entry: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 HxWx3 image, float32 hxw label) of an :func:`iter_cache` entry."""
    bgr = cv2.imdecode(np.fromfile(item_path(cache, entry["key"], ".img"), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("%s: cached image does not decode" % entry["key"])
    label = np.load(item_path(cache, entry["key"], ".npy")).astype(np.float32)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), label


OBSTACLES = ".obstacles.png"


def obstacle_share(mask: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """uint8 ``hw`` image of the share (0-255) of each pixel that the bool ``mask`` covers."""
    share = cv2.resize(np.asarray(mask, np.float32), (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(share * 255.0), 0, 255).astype(np.uint8)


def encode_obstacles(share: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", share)
    if not ok:
        raise ValueError("obstacle share does not encode as PNG")
    return png.tobytes()


def load_obstacles(cache: str, entry: Dict) -> Optional[np.ndarray]:
    """float32 h x w obstacle share (0-1) of an item at its label's size, None when the item has none."""
    path = item_path(cache, entry["key"], OBSTACLES)
    if not os.path.isfile(path):
        return None
    share = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE)
    if share is None:
        raise ValueError("%s: cached obstacle mask does not decode" % entry["key"])
    return share.astype(np.float32) * (1.0 / 255.0)


def index_line(key: str, source: str, rgb_hw: Tuple[int, int], hw: Tuple[int, int], teacher: str) -> str:
    return json.dumps({"key": key, "source": source, "width": int(rgb_hw[1]), "height": int(rgb_hw[0]),
                       "label_hw": [int(hw[0]), int(hw[1])], "teacher": teacher}) + "\n"


def append_index(cache: str, lines: List[str]) -> None:
    if lines:
        path = os.path.join(cache, "index.jsonl")
        if os.path.isfile(path) and os.path.getsize(path):
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut short by a crash: end it, so the new ones parse
                    lines = ["\n"] + lines
        with open(path, "a") as f:
            for line in lines:  # one write per line: shards appending at once do not interleave
                f.write(line)
                f.flush()
