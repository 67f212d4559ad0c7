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
:func:`resolve_backend` turns ``backend: auto`` into the fastest backend installed for the device.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from depth_estimation.options import BACKENDS

# the Python modules each backend needs (backend: auto looks for them without importing them)
BACKEND_MODULES = {"torch": ("torch",), "onnxruntime": ("onnxruntime",), "tensorrt": ("tensorrt", "pycuda")}


class BackendUnavailable(RuntimeError):
    """The backend's runtime is not installed (or has no device) on this machine."""


class ExportError(RuntimeError):
    """The ONNX export failed or its output does not match the torch model."""


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> List[str]:
    """The backends whose Python modules are installed here (found, not imported)."""
    return [b for b in BACKENDS if all(_found(m) for m in BACKEND_MODULES[b])]


def nvidia_gpu() -> bool:
    """An NVIDIA GPU's device node is here (found without loading torch or a CUDA library)."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def torch_cuda() -> bool:
    """torch is installed, built with CUDA and sees a device (imports torch: call it only on a GPU)."""
    import torch  # heavy; only where an NVIDIA device node exists
    return bool(torch.cuda.is_available())


def ort_cuda() -> bool:
    """This onnxruntime (onnxruntime-gpu) has the CUDA execution provider."""
    import onnxruntime
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def choose_backend(installed: Sequence[str], onnx_only: bool, device: str, torch_gpu: bool,
                   ort_gpu: bool) -> Tuple[str, str]:
    """``backend: auto`` as (backend, why), from what is installed (``installed``: backend names), the
    model (``onnx_only``: an ``.onnx`` file, which torch cannot run) and the device (``device``: the
    requested one; ``torch_gpu`` / ``ort_gpu``: that runtime sees an NVIDIA GPU). TensorRT where it
    is installed (the Jetson image), CUDA on a GPU (torch, or ONNX Runtime's CUDA provider), else ONNX
    Runtime on the CPU (1.2-1.4x torch eager here, README "Backends"), else torch."""
    gpu = device != "cpu"
    if gpu and "tensorrt" in installed:
        return "tensorrt", "TensorRT is installed (Jetson)"
    if gpu and torch_gpu and not onnx_only and "torch" in installed:
        return "torch", "CUDA GPU (torch)"
    if gpu and ort_gpu and "onnxruntime" in installed:
        return "onnxruntime", "CUDA GPU (ONNX Runtime's CUDA provider)"
    if device == "cuda":
        raise BackendUnavailable("backend auto, device cuda: no installed backend sees a CUDA device")
    if "onnxruntime" in installed:
        return "onnxruntime", "CPU: ONNX Runtime is the fastest CPU backend installed"
    if "torch" in installed and not onnx_only:
        return "torch", "CPU: ONNX Runtime is not installed"
    raise BackendUnavailable("backend auto: none of %s is installed here for %s"
                             % (", ".join(BACKENDS), "an ONNX file" if onnx_only else "this model"))


def resolve_backend(requested: str, onnx_only: bool = False, device: str = "auto",
                    need: Optional[str] = None) -> Tuple[str, str]:
    """``requested`` as a concrete backend and why: any but ``auto`` as it is; ``auto`` by
    :func:`choose_backend` on this machine (``need``: the one backend the model runs on, e.g. ONNX
    Runtime for ``@int8``)."""
    if requested != "auto":
        return requested, "requested"
    if need is not None:
        return need, "the model's quantization is for %s" % need
    installed = available_backends()
    gpu = device != "cpu" and nvidia_gpu()
    torch_gpu = gpu and "torch" in installed and not onnx_only and torch_cuda()
    ort_gpu = gpu and not torch_gpu and "onnxruntime" in installed and ort_cuda()
    return choose_backend(installed, onnx_only, device, torch_gpu, ort_gpu)


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
