"""DA-2K relative-depth accuracy: which of two annotated points is closer, per image pair.

Layout: ``ROOT/annotations.json`` maps an image path (relative to ROOT) to a list of
``{"point1": [row, col], "point2": [row, col], "closer_point": "point1" | "point2"}``.
Accuracy = share of pairs where the prediction puts ``closer_point`` closer: larger disparity
(``--pred-kind disparity``, what Depth-Anything outputs) or smaller depth (``--pred-kind depth``).
Ties count as wrong, so a constant map scores 0, and a working scorer on a real model is far
above chance (50 %). Accuracy is also given per scene: the first component of the image path.

    depth-da2k --root DA-2K --model da2-small --json da2k.json
    depth-da2k --root DA-2K --predictions PRED_DIR --pred-kind depth

``--predictions DIR`` reads one ``.npy`` per image at the same relative path with ``.npy``
appended in place of the image suffix (``indoor/1.jpg`` -> ``DIR/indoor/1.npy``), HxW at the
image's size. ``--model`` runs with the shared ``--backend``, ``--device``, ``--threads`` and
``--input-size`` options (0 = the model's own input size).

One rule for orientation: a DA-2K image is the image as shown, its EXIF orientation applied (as
``cv2.imread`` and image viewers do, and as the benchmark's own evaluation reads it); the model sees
it so, and a prediction must have that shown size (a JPEG's orientation tag is read from its
header, nothing is decoded). The node's frame path differs on purpose: a camera frame keeps the
sensor's geometry, which its camera_info describes.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, Dict, List, Tuple, Union

import cv2
import numpy as np

from depth_estimation import options
from depth_estimation.evaluation.metrics import KINDS as PRED_KINDS
from depth_estimation.evaluation.scoring import add_source_arguments, load_estimator, model_record
from depth_estimation.io.atomic import write_json
from depth_estimation.io.images import image_size

log = logging.getLogger(__name__)

ANNOTATIONS = "annotations.json"
Annotations = Dict[str, List[dict]]


def load_annotations(root: str) -> Annotations:
    path = os.path.join(root, ANNOTATIONS)
    if not os.path.isfile(path):
        raise FileNotFoundError("%s not found: --root must be the DA-2K folder holding %s"
                                % (path, ANNOTATIONS))
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not data:
        raise ValueError("%s must map image paths to lists of point pairs" % path)
    return data


def scene_of(image: str) -> str:
    """The scene folder of an annotation key: its first path component (``.`` for a bare file name)."""
    parts = [p for p in image.replace("\\", "/").split("/") if p not in ("", ".")]
    return parts[0] if len(parts) > 1 else "."


def _point(pair: dict, key: str, shape: Tuple[int, ...], image: str) -> Tuple[int, int]:
    row, col = (int(v) for v in pair[key])
    if not (0 <= row < shape[0] and 0 <= col < shape[1]):
        raise ValueError("%s: %s %r is outside the %dx%d prediction"
                         % (image, key, pair[key], shape[0], shape[1]))
    return row, col


def score(predictions: Callable[[str], np.ndarray], annotations: Union[str, Annotations],
          pred_kind: str = "disparity") -> dict:
    """Accuracy of ``predictions(image_path) -> HxW map`` on DA-2K ``annotations`` (a dict, or the
    root folder holding ``annotations.json``). Returns {"accuracy", "pairs", "correct",
    "per_scene": {scene: {"accuracy", "pairs", "correct"}}}."""
    if pred_kind not in PRED_KINDS:
        raise ValueError("pred_kind %r; use one of %s" % (pred_kind, ", ".join(PRED_KINDS)))
    if isinstance(annotations, str):
        annotations = load_annotations(annotations)
    per_scene: Dict[str, List[int]] = {}
    for image in sorted(annotations):
        pairs = annotations[image]
        if not pairs:
            continue
        pred = np.asarray(predictions(image))
        if pred.ndim != 2:
            raise ValueError("%s: prediction must be HxW, got shape %s" % (image, pred.shape))
        tally = per_scene.setdefault(scene_of(image), [0, 0])
        for pair in pairs:
            closer = pair["closer_point"]
            if closer not in ("point1", "point2"):
                raise ValueError("%s: closer_point %r; expected point1 or point2" % (image, closer))
            other = "point2" if closer == "point1" else "point1"
            v_closer = float(pred[_point(pair, closer, pred.shape, image)])
            v_other = float(pred[_point(pair, other, pred.shape, image)])
            right = v_closer > v_other if pred_kind == "disparity" else v_closer < v_other  # ties are wrong
            tally[0] += int(right)
            tally[1] += 1
    correct = sum(c for c, _ in per_scene.values())
    total = sum(n for _, n in per_scene.values())
    if total == 0:
        raise ValueError("the annotations hold no point pairs")
    scenes = {s: {"accuracy": c / n, "pairs": n, "correct": c} for s, (c, n) in sorted(per_scene.items())}
    return {"accuracy": correct / total, "pairs": total, "correct": correct, "per_scene": scenes}


def _image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image file as shown (EXIF orientation applied), from its header when it
    is JPEG or PNG: the size of :func:`read_rgb`'s image."""
    with open(path, "rb") as f:
        return image_size(f.read(), oriented=True)


def read_rgb(path: str) -> np.ndarray:
    """The image as shown (EXIF orientation applied: IMREAD_COLOR without IMREAD_IGNORE_ORIENTATION)."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("cannot read image %s" % path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def prediction_path(pred_dir: str, image: str) -> str:
    return os.path.join(pred_dir, os.path.splitext(image)[0] + ".npy")


def from_directory(root: str, pred_dir: str, check_size: bool = True) -> Callable[[str], np.ndarray]:
    """Predictions read from ``pred_dir/<image path without suffix>.npy``."""

    def predict(image: str) -> np.ndarray:
        path = prediction_path(pred_dir, image)
        if not os.path.isfile(path):
            raise FileNotFoundError("no prediction for %s: %s is missing" % (image, path))
        pred = np.load(path)
        if check_size:
            size = _image_size(os.path.join(root, image))
            if tuple(pred.shape) != size:
                raise ValueError("%s is %s but image %s is %dx%d"
                                 % (path, pred.shape, image, size[0], size[1]))
        return pred

    return predict


def from_model(root: str, estimator) -> Callable[[str], np.ndarray]:
    """Predictions of a loaded :class:`DepthEstimator` (relative disparity at the image size)."""
    return lambda image: estimator.infer(read_rgb(os.path.join(root, image)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depth-da2k", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the DA-2K folder (holds annotations.json)")
    add_source_arguments(parser, "folder of .npy predictions, one per image")
    options.add_json_csv(parser, csv=False)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    estimator = None
    try:
        annotations = load_annotations(args.root)
        if args.model:
            estimator = load_estimator(args)
            predict, kind = from_model(args.root, estimator), "disparity"
        else:
            if not os.path.isdir(args.predictions):
                raise FileNotFoundError("--predictions %s is not a folder" % args.predictions)
            predict, kind = from_directory(args.root, args.predictions), args.pred_kind
        result = score(predict, annotations, kind)
    except (OSError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    result = dict(result, model=args.model, predictions=args.predictions, pred_kind=kind)
    if estimator is not None:
        result.update(model_record(estimator))
    print("DA-2K accuracy %.4f over %d pairs" % (result["accuracy"], result["pairs"]))
    for scene, row in result["per_scene"].items():
        print("  %-20s %.4f  (%d pairs)" % (scene, row["accuracy"], row["pairs"]))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
