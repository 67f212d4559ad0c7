"""Depth-Anything-V2 input preparation and output restoration (numpy/OpenCV/torch, no ROS)."""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

PATCH = 14
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _multiple(x: float, multiple: int = PATCH) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def input_shape(height: int, width: int, short_side: int = 518, multiple: int = PATCH) -> Tuple[int, int]:
    """(h, w) of the network input: aspect ratio kept, short side ~``short_side``, sides multiples of 14."""
    if height <= 0 or width <= 0:
        raise ValueError("image of size %dx%d" % (width, height))
    scale = float(_multiple(short_side, multiple)) / min(height, width)
    return _multiple(height * scale, multiple), _multiple(width * scale, multiple)


def normalize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 1x3xheightxwidth network input (bicubic resize, ImageNet mean/std)."""
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
    x = (rgb.astype(np.float32) * (1.0 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def to_tensor(rgb: np.ndarray, short_side: int = 518, multiple: int = PATCH):
    """RGB uint8 HxWx3 -> normalized float tensor 1x3xh'xw' at :func:`input_shape`."""
    import torch

    return torch.from_numpy(normalize(rgb, *input_shape(rgb.shape[0], rgb.shape[1], short_side, multiple)))


def to_frame_size(prediction, height: int, width: int) -> np.ndarray:
    """Network output (tensor or array, 1xhxw or 1x1xhxw) -> float32 HxW numpy at the frame size (bilinear)."""
    import torch
    import torch.nn.functional as F

    pred = torch.as_tensor(prediction)
    pred = pred.reshape(1, 1, pred.shape[-2], pred.shape[-1]).float()
    if pred.shape[-2:] != (height, width):
        pred = F.interpolate(pred, size=(height, width), mode="bilinear", align_corners=False)
    return pred[0, 0].cpu().numpy().astype(np.float32, copy=False)
