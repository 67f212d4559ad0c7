"""Teacher labels for distillation: run a teacher once over unlabeled images, cache its depth.

Sources are a folder of images (``.jpg``/``.jpeg``/``.png``, searched recursively) or ROS 1 bags
(their ``sensor_msgs/CompressedImage`` frames, read with rosbags). Items are listed in a fixed
order (sorted paths; bag frames in bag order) and named by the SHA-1 of their encoded bytes, so
duplicate contents are labelled once. ``--shard i/n`` takes the items at positions i, i+n, ...
of the de-duplicated list: n processes (one per GPU or machine) split it with no overlap and
no gap, and may share one cache.

Cache layout (the contract with the training code; ``key`` = SHA-1 hex of the encoded bytes):

* ``<cache>/teacher.json``: ``{"teacher", "backend", "input_size"}``, the teacher spec
  (local paths made absolute), the backend of the first run and the network input short side.
  A run with another teacher or input size on a cache holding labels raises ValueError.
* ``<cache>/items/<key[:2]>/<key>.img``: the encoded image bytes as found (JPEG or PNG).
* ``<cache>/items/<key[:2]>/<key>.npy``: float16 h x w relative inverse depth (larger = closer),
  the teacher's output at the image's size resized (bilinear) to the image's aspect with short
  side ``min(label_size, image short side)``. Written via a temporary file and ``os.replace``:
  it exists whole or not at all, and an item whose ``.npy`` exists is never labelled again.
* ``<cache>/index.jsonl``: one JSON line per labelled item, appended after its ``.npy`` is in
  place: ``{"key", "source", "width", "height", "label_hw": [h, w], "teacher"}``, ``source``
  being the image's path or ``<bag>:<topic>:<index on that topic>``. Readers skip lines whose
  files are missing and repeated keys (:func:`iter_cache`, :func:`load_item`).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import sys
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from depth_estimation.io import bags as bagio
from depth_estimation.framepath.frames import RejectedFrame, decode

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MAX_SIDE = 8192


def item_path(cache: str, key: str, ext: str) -> str:
    return os.path.join(cache, "items", key[:2], key + ext)


def label_hw(height: int, width: int, label_size: int) -> Tuple[int, int]:
    """The label's (h, w): the image's aspect, short side ``min(label_size, short side)``."""
    short = min(int(label_size), height, width)
    if height <= width:
        return short, max(1, int(round(width * short / float(height))))
    return max(1, int(round(height * short / float(width)))), short


def _write_atomic(path: str, write: Callable) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())  # per process: shards may share a cache
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _normalize_teacher(teacher: str) -> str:
    base, sep, suffix = teacher.strip().partition("@")
    path = os.path.expanduser(base)
    return os.path.abspath(path) + sep + suffix if os.path.exists(path) else teacher.strip()


# ------------------------------------------------------------------------------------ sources


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
    from rosbags.rosbag1 import Reader

    store, counts = bagio.typestore(), {}  # type: Dict[str, int]
    with Reader(path) as reader:
        conns = [c for c in reader.connections
                 if c.msgtype == bagio.IMAGE_TYPE and (topic is None or c.topic == topic)]
        if not conns:
            return
        for conn, _t, raw in reader.messages(connections=conns):
            index = counts[conn.topic] = counts.get(conn.topic, -1) + 1
            yield "%s:%s:%d" % (path, conn.topic, index), bytes(store.deserialize_ros1(raw, conn.msgtype).data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _stream(images: Sequence[str], bags: Sequence[str], topic: Optional[str]) -> Iterator[Tuple[str, str, Callable]]:
    """(source, bag or "", loader of the bytes) for every item, in the fixed order."""
    for path in images:
        yield path, "", (lambda p=path: _read(p))
    for bag in bags:
        for source, data in bag_frames(bag, topic):
            yield source, bag, (lambda d=data: d)


# ------------------------------------------------------------------------------------ the cache


def read_teacher(cache: str) -> Optional[Dict]:
    try:
        with open(os.path.join(cache, "teacher.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _indexed_keys(cache: str) -> set:
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


def _has_labels(cache: str) -> bool:
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
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.load(item_path(cache, entry["key"], ".npy")).astype(np.float32)


# ------------------------------------------------------------------------------------ labelling


def _infer_many(est, rgbs: List[np.ndarray]) -> List[np.ndarray]:
    """``est.infer`` of each frame; with the torch backend frames of one input size share a batch."""
    from depth_estimation.runtime import backends
    out: List[Optional[np.ndarray]] = [None] * len(rgbs)
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, rgb in enumerate(rgbs):
        groups.setdefault(est.input_hw(*rgb.shape[:2]), []).append(i)
    for hw, idx in groups.items():
        runner = est.runner_for(hw)
        if len(idx) == 1 or not isinstance(runner, backends.TorchRunner):
            for i in idx:
                out[i] = est.infer(rgbs[i])
            continue
        import torch

        from depth_estimation.runtime import preprocess
        x = torch.from_numpy(np.concatenate([preprocess.normalize(rgbs[i], *hw) for i in idx])).to(runner.device)
        with torch.inference_mode():
            y = runner.module(x.half() if runner.half else x).float().cpu()
        for j, i in enumerate(idx):
            out[i] = preprocess.to_frame_size(y[j], *rgbs[i].shape[:2])
    return out  # type: ignore[return-value]


def _entry(key: str, source: str, rgb_hw: Tuple[int, int], hw: Tuple[int, int], teacher: str) -> str:
    return json.dumps({"key": key, "source": source, "width": int(rgb_hw[1]), "height": int(rgb_hw[0]),
                       "label_hw": [int(hw[0]), int(hw[1])], "teacher": teacher}) + "\n"


def _append_index(cache: str, lines: List[str]) -> None:
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


def parse_shard(text: str) -> Tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError("--shard %r: expected i/n, e.g. 0/4" % text) from None
    if not 0 <= i < n:
        raise ValueError("--shard %s: need 0 <= i < n" % text)
    return i, n


def label(teacher: str, cache: str, images: Optional[str] = None, bags: Optional[str] = None,
          backend: str = "torch", device: str = "auto", input_size: Optional[int] = None, batch_size: int = 8,
          label_size: int = 384, shard: Tuple[int, int] = (0, 1), topic: Optional[str] = None,
          progress: bool = True) -> Dict[str, int]:
    """Label this shard's items into ``cache`` (layout in the module docstring).

    Returns counts: ``seen`` (unique items of this shard) = ``labelled`` + ``skipped`` (already
    cached) + ``failed`` (unreadable or undecodable; warned about, never fatal)."""
    from tqdm import tqdm

    from depth_estimation.runtime.estimator import DepthEstimator

    if images is None and bags is None:
        raise ValueError("give a folder of images or a bag glob")
    if isinstance(shard, str):
        shard = parse_shard(shard)
    i_shard, n_shard = int(shard[0]), int(shard[1])
    if not 0 <= i_shard < n_shard:
        raise ValueError("shard %d/%d: need 0 <= i < n" % (i_shard, n_shard))
    if int(label_size) < 1 or int(batch_size) < 1:
        raise ValueError("label_size and batch_size must be positive")
    teacher = _normalize_teacher(teacher)
    cache = os.path.abspath(os.path.expanduser(cache))
    recorded, has_labels = read_teacher(cache), _has_labels(cache)
    if recorded and has_labels:
        if recorded.get("teacher") != teacher or input_size not in (None, recorded.get("input_size")):
            raise ValueError("cache %s holds labels of teacher %s at input size %s, not %s at %s; use another "
                             "--cache" % (cache, recorded.get("teacher"), recorded.get("input_size"), teacher,
                                          input_size if input_size is not None else "its default"))
        input_size = recorded.get("input_size")
        if recorded.get("backend") != backend:
            log.warning("cache %s was labelled with backend %s, this run uses %s", cache, recorded.get("backend"),
                        backend)

    image_paths = list_images(images) if images is not None else []
    bag_paths = list_bags(bags) if bags is not None else []
    items, keys, total = [], set(), 0  # items: (source, key or None when unreadable, bag)
    for source, bag, load in _stream(image_paths, bag_paths, topic):
        total += 1
        try:
            key: Optional[str] = hashlib.sha1(load()).hexdigest()
        except OSError as exc:
            key = None
            log.warning("cannot read %s: %s", source, exc)
        if key is None or key not in keys:
            keys.add(key)
            items.append((source, key, bag))
    mine = items[i_shard::n_shard]
    counts = {"seen": len(mine), "labelled": 0, "skipped": 0, "failed": 0}
    pending: Dict[str, str] = {}
    indexed = _indexed_keys(cache) if has_labels else set()
    repair = []
    for source, key, _bag in mine:
        if key is None:
            counts["failed"] += 1
        elif os.path.isfile(item_path(cache, key, ".npy")):
            counts["skipped"] += 1
            if key not in indexed:  # a run stopped between the .npy and its index line
                try:
                    rgb, depth = load_item(cache, {"key": key})
                    repair.append(_entry(key, source, rgb.shape[:2], depth.shape, teacher))
                except (OSError, ValueError) as exc:
                    log.warning("%s: cached item %s is unreadable: %s", source, key, exc)
        else:
            pending[source] = key
    os.makedirs(cache, exist_ok=True)
    _append_index(cache, repair)
    log.info("%d items (%d duplicates dropped); shard %d/%d has %d, %d to label", len(items), total - len(items),
             i_shard, n_shard, len(mine), len(pending))
    if not pending:
        return counts

    est = DepthEstimator(teacher, input_size=input_size, backend=backend, device=device).load()
    if not (recorded and has_labels):
        payload = json.dumps({"teacher": teacher, "backend": backend, "input_size": est.input_size}, indent=1)
        _write_atomic(os.path.join(cache, "teacher.json"), lambda f: f.write(payload.encode()))

    warned: List[str] = []

    def flush(batch):
        good = []
        for source, key, data in batch:
            try:
                bgr = decode(data, min_side=1, max_side=MAX_SIDE)
            except (RejectedFrame, cv2.error) as exc:
                counts["failed"] += 1
                log.warning("skipping %s: %s", source, exc)
                continue
            good.append((source, key, data, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        depths = _infer_many(est, [g[3] for g in good])
        for (source, key, data, rgb), depth in zip(good, depths):
            hw = label_hw(rgb.shape[0], rgb.shape[1], label_size)
            if hw != depth.shape:
                depth = cv2.resize(depth, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
            img = item_path(cache, key, ".img")
            if not os.path.isfile(img):
                _write_atomic(img, lambda f: f.write(data))
            half = depth.astype(np.float16)
            peak = float(np.abs(depth).max())
            if not warned and (not np.isfinite(half).all() or 0 < peak < 1e-2):
                warned.append(source)
                log.warning("%s: teacher output peaks at %.3g, outside what float16 labels keep (6e-5 .. 65504 "
                            "with 3 digits)", source, peak)
            _write_atomic(item_path(cache, key, ".npy"), lambda f: np.save(f, half))
            _append_index(cache, [_entry(key, source, rgb.shape[:2], hw, teacher)])
            counts["labelled"] += 1

    wanted_bags = sorted({bag for source, _key, bag in mine if bag and source in pending})
    wanted_images = [source for source, _key, bag in mine if not bag and source in pending]
    batch: List[Tuple[str, str, bytes]] = []
    with tqdm(total=len(pending), desc="labelling", unit="img", disable=not progress) as bar:
        for source, _bag, load in _stream(wanted_images, wanted_bags, topic):
            key = pending.get(source)
            if key is None:
                continue
            try:
                data = load()
            except OSError as exc:
                data = b""
                log.warning("cannot read %s: %s", source, exc)
            if hashlib.sha1(data).hexdigest() != key:
                counts["failed"] += 1
                log.warning("skipping %s: changed or unreadable while labelling", source)
                bar.update(1)
                continue
            batch.append((source, key, data))
            if len(batch) >= batch_size:
                flush(batch)
                bar.update(len(batch))
                batch = []
        flush(batch)
        bar.update(len(batch))
    return counts


# ------------------------------------------------------------------------------------ command line


def add_label_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--teacher", required=True, help="model spec of the teacher, e.g. da2-large")
    parser.add_argument("--images", help="a folder of .jpg/.jpeg/.png images (searched recursively)")
    parser.add_argument("--bags", help="a glob of ROS 1 bags; their CompressedImage frames are labelled")
    parser.add_argument("--topic", help="only this CompressedImage topic of the bags")
    parser.add_argument("--cache", required=True, help="the label cache folder (resumable, shareable by shards)")
    parser.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--input-size", type=int, default=None, help="teacher input short side (default: its own)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--label-size", type=int, default=384, help="label short side (at most the image's)")
    parser.add_argument("--shard", default="0/1", help="i/n: label items i, i+n, i+2n, ... of the list")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def run_label(args: argparse.Namespace) -> int:
    from depth_estimation.models.specs import ModelNotFound

    try:
        if (args.images is None) == (args.bags is None):
            raise ValueError("give exactly one of --images and --bags")
        counts = label(args.teacher, args.cache, images=args.images, bags=args.bags, backend=args.backend,
                       device=args.device, input_size=args.input_size, batch_size=args.batch_size,
                       label_size=args.label_size, shard=parse_shard(args.shard), topic=args.topic,
                       progress=getattr(args, "progress", True))
    except (ValueError, ModelNotFound) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    print("%s: seen %d, labelled %d, skipped %d (cached), failed %d"
          % (args.cache, counts["seen"], counts["labelled"], counts["skipped"], counts["failed"]))
    return 0


def main(argv=None) -> int:
    parser = add_label_arguments(argparse.ArgumentParser(
        prog="depth-distill label", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run_label(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
