"""Depth-Anything-V2 input preparation and output restoration (numpy/OpenCV, no torch, no ROS).

Runners with any input size (torch) take the frame resized to :func:`input_shape`. Runners with
a fixed input (an exported ONNX file, a TensorRT engine) take it *letterboxed*
(:func:`letterbox`): resized keeping its aspect ratio to fit inside the fixed input, centred,
the rest padded with the ImageNet mean; :func:`unletterbox` crops the output back to the frame.
:func:`bucket_shape` picks those fixed inputs from a few aspect ratios, so that frames of many
sizes share a few exports.
"""
from __future__ import annotations

import math
import sys
from typing import Optional, Tuple

import cv2
import numpy as np

PATCH = 14
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# Long side / short side of the fixed network inputs (see bucket_shape): the cameras' own ratios
# (square, 5:4, 4:3, 3:2, 16:9, 2:1) need no padding, and neighbours are at most 25 % apart, so a
# frame pays at most a quarter of its input in padding. Wider frames continue by factors of 1.25.
ASPECT_BUCKETS = (1.0, 5 / 4, 4 / 3, 3 / 2, 16 / 9, 2.0, 2.5, 3.0, 3.5, 4.0)
ASPECT_STEP = 1.25
_SAME_ASPECT = 1e-3  # relative: an aspect ratio this close to a bucket is that bucket
Window = Tuple[int, int, int, int]  # top, left, height, width of the frame inside a network input


def round_to_multiple(x: float, multiple: int = PATCH) -> int:
    """``x`` rounded to the nearest multiple of ``multiple``, at least one multiple."""
    return max(multiple, int(round(x / multiple)) * multiple)


def input_shape(height: int, width: int, short_side: int = 518, multiple: int = PATCH) -> Tuple[int, int]:
    """(h, w) of the network input: aspect ratio kept, short side ~``short_side``, sides multiples of 14."""
    if height <= 0 or width <= 0:
        raise ValueError("image of size %dx%d" % (width, height))
    scale = float(round_to_multiple(short_side, multiple)) / min(height, width)
    return round_to_multiple(height * scale, multiple), round_to_multiple(width * scale, multiple)


def normalize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 1x3xheightxwidth network input (bicubic resize, ImageNet mean/std)."""
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    x = (rgb.astype(np.float32) * (1.0 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def _aspect_bucket(aspect: float) -> float:
    """The smallest of :data:`ASPECT_BUCKETS` (continued by :data:`ASPECT_STEP`) >= ``aspect``."""
    for bucket in ASPECT_BUCKETS:
        if aspect <= bucket * (1 + _SAME_ASPECT):
            return bucket
    steps = math.ceil(math.log(aspect / ASPECT_BUCKETS[-1]) / math.log(ASPECT_STEP) - _SAME_ASPECT)
    return ASPECT_BUCKETS[-1] * ASPECT_STEP ** steps


def bucket_shape(height: int, width: int, short_side: int = 518, multiple: int = PATCH) -> Tuple[int, int]:
    """A fixed network input (h, w) that holds :func:`input_shape` of the frame: the same short
    side, the long side that of the frame's aspect ratio rounded up to :data:`ASPECT_BUCKETS`. At
    one ``short_side`` all frames share a few shapes per bucket (portrait and landscape), and a
    frame of a bucket's own ratio gets exactly :func:`input_shape`."""
    natural = input_shape(height, width, short_side, multiple)
    short, long_ = min(natural), max(natural)
    aspect = max(height, width) / float(min(height, width))
    bucket = _aspect_bucket(aspect)
    if abs(aspect - bucket) > _SAME_ASPECT * bucket:
        long_ = max(long_, round_to_multiple(short * bucket, multiple))
    return (long_, short) if height > width else (short, long_)  # the frame's orientation


def fit_inside(height: int, width: int, box_h: int, box_w: int) -> Tuple[int, int]:
    """The largest (h, w) with the aspect ratio of ``height`` x ``width`` inside ``box_h`` x
    ``box_w`` (sides rounded, at least one pixel)."""
    scale = min(box_h / float(height), box_w / float(width))
    return (min(box_h, max(1, int(round(height * scale)))), min(box_w, max(1, int(round(width * scale)))))


def letterbox(rgb: np.ndarray, box_hw: Tuple[int, int],
              content_hw: Tuple[int, int]) -> Tuple[np.ndarray, Window]:
    """RGB uint8 HxWx3 -> the float32 1x3xbox network input with the frame, resized to
    ``content_hw`` (which fits inside ``box_hw``; see :func:`fit_inside`), centred and padded with
    the ImageNet mean (0 once normalized); and the frame's window ``(top, left, h, w)`` in it."""
    (box_h, box_w), (h, w) = box_hw, content_hw
    if h > box_h or w > box_w:
        raise ValueError("content %dx%d does not fit in the %dx%d input" % (h, w, box_h, box_w))
    top, left = (box_h - h) // 2, (box_w - w) // 2
    x = np.zeros((1, 3, box_h, box_w), np.float32)
    x[:, :, top:top + h, left:left + w] = normalize(rgb, h, w)
    return x, (top, left, h, w)


def unletterbox(prediction, window: Optional[Window], box_hw: Optional[Tuple[int, int]], height: int,
                width: int) -> np.ndarray:
    """The output (1xhxw or 1x1xhxw, any resolution) of a ``box_hw`` input letterboxed with
    ``window`` -> float32 HxW: the window, scaled to the output's resolution, cropped and resized
    to the frame's size. ``window=None``: the whole output (an input that was not letterboxed)."""
    pred = _as_array(prediction)
    if window is not None and box_hw is not None:
        top, left, h, w = window
        sy, sx = pred.shape[0] / float(box_hw[0]), pred.shape[1] / float(box_hw[1])
        y0, x0 = int(round(top * sy)), int(round(left * sx))
        pred = pred[y0:y0 + max(1, int(round(h * sy))), x0:x0 + max(1, int(round(w * sx)))]
    return to_frame_size(pred, height, width)


def _as_array(prediction) -> np.ndarray:
    """A network output (numpy array or torch tensor, 1xhxw or 1x1xhxw) as a float32 hxw array."""
    torch = sys.modules.get("torch")  # a tensor can only come from a loaded torch; never imported here
    if torch is not None and isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().float().cpu().numpy()
    pred = np.asarray(prediction, dtype=np.float32)
    return pred.reshape(pred.shape[-2], pred.shape[-1])


def to_frame_size(prediction, height: int, width: int) -> np.ndarray:
    """Network output (tensor or array, 1xhxw or 1x1xhxw) -> float32 HxW numpy at the frame size
    (bilinear, half-pixel centres: torch's ``interpolate(align_corners=False)``; OpenCV, so that the
    ONNX Runtime and TensorRT paths run without torch)."""
    pred = _as_array(prediction)
    if pred.shape != (height, width):
        pred = cv2.resize(pred, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(pred, dtype=np.float32)
