"""Teacher labels for distillation: run a teacher once over unlabeled images, cache its depth.
``--teacher ground-truth`` takes the depth of RGB-D bags instead (:mod:`.ground_truth`).

Sources are a folder of images (``.jpg``/``.jpeg``/``.png``, searched recursively) or ROS 1 bags
(their ``sensor_msgs/CompressedImage`` frames, read with rosbags): :mod:`.sources`. Items are
listed in a fixed order (sorted paths; bag frames in bag order) and named by the SHA-1 of their
encoded bytes, so duplicate contents are labelled once. ``--shard i/n`` takes the items at
positions i, i+n, ... of the de-duplicated list: n processes (one per GPU or machine) split it
with no overlap and no gap, and may share one cache.

The labels go to a cache folder (layout: :mod:`depth_estimation.distill.label_cache`); a
second run labels only what is not there yet.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from depth_estimation import options
from depth_estimation.distill import ground_truth, label_cache, sources
from depth_estimation.framepath.frames import RejectedFrame, decode
from depth_estimation.io.atomic import atomic_file, output_problem, write_bytes
from depth_estimation.models.specs import ModelNotFound
from depth_estimation.runtime import preprocess
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.runtime.torch_runner import TorchRunner

log = logging.getLogger(__name__)

MAX_SIDE = 8192

Item = Tuple[str, Optional[str], str]  # (source, key or None when unreadable, bag or "")


def _normalize_teacher(teacher: str) -> str:
    base, sep, suffix = teacher.strip().partition("@")
    path = os.path.expanduser(base)
    return os.path.abspath(path) + sep + suffix if os.path.exists(path) else teacher.strip()


# ------------------------------------------------------------------------------------ labelling


def parse_shard(text: str) -> Tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError("--shard %r: expected i/n, e.g. 0/4" % text) from None
    if not 0 <= i < n:
        raise ValueError("--shard %s: need 0 <= i < n" % text)
    return i, n


def _infer_many(est: DepthEstimator, rgbs: List[np.ndarray]) -> List[np.ndarray]:
    """``est.infer`` of each frame; with the torch backend frames of one input size share a batch."""
    out: List[Optional[np.ndarray]] = [None] * len(rgbs)
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, rgb in enumerate(rgbs):
        groups.setdefault(est.input_hw(*rgb.shape[:2]), []).append(i)
    for hw, idx in groups.items():
        runner = est.runner_for(hw)
        if len(idx) == 1 or not isinstance(runner, TorchRunner):
            for i in idx:
                out[i] = est.infer(rgbs[i])
            continue
        x = torch.from_numpy(np.concatenate([preprocess.normalize(rgbs[i], *hw) for i in idx]))
        x = x.to(runner.device)
        with torch.inference_mode():
            y = runner.module(x.half() if runner.half else x).float().cpu()
        for j, i in enumerate(idx):
            out[i] = preprocess.to_frame_size(y[j], *rgbs[i].shape[:2])
    return out  # type: ignore[return-value]


class LabelWriter:
    """Labels batches of (source, key, encoded bytes) into ``cache`` with a loaded teacher,
    counting ``labelled`` and ``failed`` items in ``counts``."""

    def __init__(self, est: DepthEstimator, cache: str, teacher: str, label_size: int,
                 counts: Dict[str, int]):
        self.est, self.cache, self.teacher, self.label_size = est, cache, teacher, label_size
        self.counts = counts
        self.warned = False  # the float16 range warning is given once

    def write_batch(self, batch: Sequence[Tuple[str, str, bytes]]) -> None:
        good = []
        for source, key, data in batch:
            try:
                bgr = decode(data, min_side=1, max_side=MAX_SIDE)
            except (RejectedFrame, cv2.error) as exc:
                self.counts["failed"] += 1
                log.warning("skipping %s: %s", source, exc)
                continue
            good.append((source, key, data, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        depths = _infer_many(self.est, [g[3] for g in good])
        for (source, key, data, rgb), depth in zip(good, depths):
            self._write_item(source, key, data, rgb, depth)

    def _write_item(self, source: str, key: str, data: bytes, rgb: np.ndarray, depth: np.ndarray) -> None:
        hw = label_cache.label_hw(rgb.shape[0], rgb.shape[1], self.label_size)
        if hw != depth.shape:
            depth = cv2.resize(depth, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
        img = label_cache.item_path(self.cache, key, ".img")
        if not os.path.isfile(img):
            write_bytes(img, data)
        half = depth.astype(np.float16)
        peak = float(np.abs(depth).max())
        if not self.warned and (not np.isfinite(half).all() or 0 < peak < 1e-2):
            self.warned = True
            log.warning("%s: teacher output peaks at %.3g, outside what float16 labels keep (6e-5 .. 65504 "
                        "with 3 digits)", source, peak)
        with atomic_file(label_cache.item_path(self.cache, key, ".npy"), "wb") as f:
            np.save(f, half)
        line = label_cache.index_line(key, source, rgb.shape[:2], hw, self.teacher)
        label_cache.append_index(self.cache, [line])
        self.counts["labelled"] += 1


def _check_shard(shard) -> Tuple[int, int]:
    if isinstance(shard, str):
        shard = parse_shard(shard)
    i_shard, n_shard = int(shard[0]), int(shard[1])
    if not 0 <= i_shard < n_shard:
        raise ValueError("shard %d/%d: need 0 <= i < n" % (i_shard, n_shard))
    return i_shard, n_shard


def _recorded_input_size(cache: str, recorded: Dict, teacher: str, input_size: Optional[int],
                         backend: str) -> Optional[int]:
    """The input size of a cache holding labels; ValueError for another teacher or input size."""
    if recorded.get("teacher") != teacher or input_size not in (None, recorded.get("input_size")):
        raise ValueError("cache %s holds labels of teacher %s at input size %s, not %s at %s; use another "
                         "--cache" % (cache, recorded.get("teacher"), recorded.get("input_size"), teacher,
                                      input_size if input_size is not None else "its default"))
    if recorded.get("backend") != backend:
        log.warning("cache %s was labelled with backend %s, this run uses %s", cache, recorded.get("backend"),
                    backend)
    return recorded.get("input_size")


def _unique_items(image_paths: List[str], bag_paths: List[str],
                  topic: Optional[str]) -> Tuple[List[Item], int]:
    """The items in the fixed order with duplicate contents dropped, and the number before that."""
    items: List[Item] = []
    keys: Set[Optional[str]] = set()
    total = 0
    for source, bag, load in sources.stream(image_paths, bag_paths, topic):
        total += 1
        try:
            key: Optional[str] = hashlib.sha1(load()).hexdigest()
        except OSError as exc:
            key = None
            log.warning("cannot read %s: %s", source, exc)
        if key is None or key not in keys:
            keys.add(key)
            items.append((source, key, bag))
    return items, total


def _triage(cache: str, mine: List[Item], teacher: str, has_labels: bool,
            counts: Dict[str, int]) -> Tuple[Dict[str, str], List[str]]:
    """({source: key} still to label, index lines of labels that lack theirs); counts the rest."""
    pending: Dict[str, str] = {}
    indexed = label_cache.indexed_keys(cache) if has_labels else set()
    repair = []
    for source, key, _bag in mine:
        if key is None:
            counts["failed"] += 1
        elif os.path.isfile(label_cache.item_path(cache, key, ".npy")):
            counts["skipped"] += 1
            if key not in indexed:  # a run stopped between the .npy and its index line
                try:
                    rgb, depth = label_cache.load_item(cache, {"key": key})
                    repair.append(label_cache.index_line(key, source, rgb.shape[:2], depth.shape, teacher))
                except (OSError, ValueError) as exc:
                    log.warning("%s: cached item %s is unreadable: %s", source, key, exc)
        else:
            pending[source] = key
    return pending, repair


def _read_unchanged(source: str, load: Callable[[], bytes], key: str) -> Optional[bytes]:
    """The item's bytes, or None when they no longer hash to ``key`` (or cannot be read)."""
    try:
        data = load()
    except OSError as exc:
        data = b""
        log.warning("cannot read %s: %s", source, exc)
    if hashlib.sha1(data).hexdigest() != key:
        log.warning("skipping %s: changed or unreadable while labelling", source)
        return None
    return data


def _label_pending(writer: LabelWriter, mine: List[Item], pending: Dict[str, str], topic: Optional[str],
                   batch_size: int, progress: bool) -> None:
    """Read the ``pending`` items again (in the fixed order) and label them in batches."""
    wanted_bags = sorted({bag for source, _key, bag in mine if bag and source in pending})
    wanted_images = [source for source, _key, bag in mine if not bag and source in pending]
    batch: List[Tuple[str, str, bytes]] = []
    with tqdm(total=len(pending), desc="labelling", unit="img", disable=not progress) as bar:
        for source, _bag, load in sources.stream(wanted_images, wanted_bags, topic):
            key = pending.get(source)
            if key is None:
                continue
            data = _read_unchanged(source, load, key)
            if data is None:
                writer.counts["failed"] += 1
                bar.update(1)
                continue
            batch.append((source, key, data))
            if len(batch) >= batch_size:
                writer.write_batch(batch)
                bar.update(len(batch))
                batch = []
        writer.write_batch(batch)
        bar.update(len(batch))


def label(teacher: str, cache: str, images: Optional[str] = None, bags: Optional[str] = None,
          backend: str = "torch", device: str = "auto", input_size: Optional[int] = None, batch_size: int = 8,
          label_size: int = 384, shard: Tuple[int, int] = (0, 1), topic: Optional[str] = None,
          progress: bool = True, threads: int = 0, zero_depth: str = "auto") -> Dict[str, int]:
    """Label this shard's items into ``cache`` (layout: :mod:`.label_cache`). ``input_size``
    None = the teacher's own (or, on a cache holding labels, the one recorded there). Teacher
    ``ground-truth``: the depth of the RGB-D bags ``bags`` (:mod:`.ground_truth`; no model runs).

    Returns counts: ``seen`` (unique items of this shard) = ``labelled`` + ``skipped`` (already
    cached) + ``failed`` (unreadable or undecodable; warned about, never fatal)."""
    if images is None and bags is None:
        raise ValueError("give a folder of images or a bag glob")
    i_shard, n_shard = _check_shard(shard)
    if teacher.strip() == ground_truth.GROUND_TRUTH:
        if images is not None or bags is None:
            raise ValueError("teacher %s labels RGB-D bags with their own depth: give --bags, not --images"
                             % ground_truth.GROUND_TRUTH)
        return ground_truth.label_ground_truth(cache, bags, label_size, (i_shard, n_shard), topic, progress,
                                               zero_depth)
    if int(label_size) < 1 or int(batch_size) < 1:
        raise ValueError("label_size and batch_size must be positive")
    teacher = _normalize_teacher(teacher)
    cache = os.path.abspath(os.path.expanduser(cache))
    recorded, has_labels = label_cache.read_teacher(cache), label_cache.has_labels(cache)
    if recorded and has_labels:
        input_size = _recorded_input_size(cache, recorded, teacher, input_size, backend)

    image_paths = sources.list_images(images) if images is not None else []
    bag_paths = sources.list_bags(bags) if bags is not None else []
    items, total = _unique_items(image_paths, bag_paths, topic)
    mine = items[i_shard::n_shard]
    counts = {"seen": len(mine), "labelled": 0, "skipped": 0, "failed": 0}
    pending, repair = _triage(cache, mine, teacher, has_labels, counts)
    os.makedirs(cache, exist_ok=True)
    label_cache.append_index(cache, repair)
    log.info("%d items (%d duplicates dropped); shard %d/%d has %d, %d to label", len(items),
             total - len(items), i_shard, n_shard, len(mine), len(pending))
    if not pending:
        return counts

    est = DepthEstimator(teacher, input_size=input_size, backend=backend, device=device, threads=threads)
    est.load()
    if not (recorded and has_labels):
        label_cache.write_teacher(cache, teacher, backend, est.input_size)
    _label_pending(LabelWriter(est, cache, teacher, label_size, counts), mine, pending, topic, batch_size,
                   progress)
    return counts


# ------------------------------------------------------------------------------------ command line


def add_label_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--teacher", required=True, help="the label source: a teacher's model spec (e.g. da2-large), or "
        "%s: the depth of RGB-D bags (--bags; 1/metres, no depth = masked)" % ground_truth.GROUND_TRUTH)
    add("--images", help="a folder of .jpg/.jpeg/.png images (searched recursively)")
    add("--bags", help="a glob of ROS 1 bags; their CompressedImage frames are labelled")
    add("--topic", help="only this CompressedImage topic of the bags")
    add("--cache", required=True, help="the label cache folder (resumable, shareable by shards)")
    options.add_runtime(parser, backend="torch")  # torch batches the teacher's frames (--batch-size)
    add("--batch-size", type=int, default=8, help="images per teacher batch (default 8)")
    add("--label-size", type=int, default=384, help="label short side (at most the image's; default 384)")
    add("--shard", default="0/1", help="i/n: label items i, i+n, i+2n, ... of the list")
    add("--zero-depth", choices=ground_truth.ZERO_DEPTH, default="auto", help="%s: what a depth of 0 is: "
        "missing (masked), far (a valid target, as the sky) or auto (default): far in depth-sim2bag's bags "
        "(the sky), missing in others" % ground_truth.GROUND_TRUTH)
    options.add_progress(parser)
    return parser


def run_label(args: argparse.Namespace) -> int:
    problem = output_problem(args.cache, folder=True)
    if problem:  # before the teacher loads
        print("error: %s" % problem, file=sys.stderr)
        return 2
    try:
        if (args.images is None) == (args.bags is None):
            raise ValueError("give exactly one of --images and --bags")
        runtime = options.estimator_kwargs(args, model=args.teacher)
        counts = label(args.teacher, args.cache, images=args.images, bags=args.bags,
                       backend=runtime["backend"], device=runtime["device"], input_size=runtime["input_size"],
                       threads=runtime["threads"], batch_size=args.batch_size, label_size=args.label_size,
                       shard=parse_shard(args.shard), topic=args.topic, zero_depth=args.zero_depth,
                       progress=getattr(args, "progress", True))
    except (ValueError, ModelNotFound) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    print("%s: seen %d, labelled %d, skipped %d (cached), failed %d"
          % (args.cache, counts["seen"], counts["labelled"], counts["skipped"], counts["failed"]))
    source = args.images if args.images is not None else args.bags
    if not counts["seen"]:
        print("error: nothing to label: no .jpg/.jpeg/.png image or bag frame in %s (shard %s)"
              % (source, args.shard), file=sys.stderr)
        return 2
    if counts["failed"] and not counts["labelled"] and not counts["skipped"]:
        print("error: every one of the %d items of %s failed (unreadable or not an image); no label written"
              % (counts["failed"], source), file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = add_label_arguments(argparse.ArgumentParser(
        prog="depth-distill label", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run_label(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
