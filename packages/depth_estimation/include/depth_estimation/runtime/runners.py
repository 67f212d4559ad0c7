"""What the backend runners share; imports without torch, ONNX Runtime or TensorRT.

Every runner is called as ``runner(x)`` with ``x`` a float32 numpy array ``[1, 3, H, W]`` (the
normalized network input, see :func:`depth_estimation.runtime.preprocess.normalize`) and returns
float32 ``[1, H, W]`` (relative inverse depth). Each has ``backend``, ``device`` and ``input_hw``
(the fixed ``(H, W)`` an exported model was built for; ``None`` when any size works):

* :class:`~depth_estimation.runtime.torch_runner.TorchRunner` runs the torch module itself;
* :class:`~depth_estimation.runtime.ort_runner.OrtRunner` runs an ONNX file in ONNX Runtime;
* :class:`~depth_estimation.runtime.tensorrt_runner.TensorRTRunner` builds a TensorRT engine from
  that ONNX file and runs it (Jetson).

The ONNX files come from :func:`depth_estimation.runtime.onnx_export.export_onnx`.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np


class BackendUnavailable(RuntimeError):
    """The backend's runtime is not installed (or has no device) on this machine."""


class ExportError(RuntimeError):
    """The ONNX export failed or its output does not match the torch model."""


def check_input(x: Any, input_hw: Optional[Tuple[int, int]], who: str) -> np.ndarray:
    """``x`` as a contiguous float32 ``[1, 3, H, W]`` array; ValueError for another shape, or for
    another ``(H, W)`` than ``input_hw`` (the size an ONNX file was exported for)."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError("%s: expected a float32 array 1x3xHxW, got shape %s" % (who, tuple(x.shape)))
    if input_hw is not None and tuple(x.shape[2:]) != tuple(input_hw):
        raise ValueError("%s: input is %dx%d (HxW) but the model was exported for %dx%d; resize to "
                         "that size or export again for this one (python3 -m depth_estimation.export)"
                         % (who, x.shape[2], x.shape[3], input_hw[0], input_hw[1]))
    return np.ascontiguousarray(x, dtype=np.float32)


def as_depth(y: Any) -> np.ndarray:
    """A runner's output as float32 ``[1, H, W]`` (``[1, 1, H, W]`` loses its channel axis)."""
    y = np.asarray(y)
    if y.ndim == 4 and y.shape[1] == 1:
        y = y[:, 0]
    return y.astype(np.float32, copy=False)
