"""The torch backend: :class:`DepthOutput` (any depth model as ``x -> [1, H, W]``) and
:class:`TorchRunner` (the torch module itself, CPU or CUDA, optionally fp16 on CUDA)."""
from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np
import torch

from depth_estimation.runtime.runners import BackendUnavailable, as_depth, check_input


def _is_transformers_model(model: Any) -> bool:
    transformers = sys.modules.get("transformers")  # not imported -> cannot be one of its models
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


class DepthOutput(torch.nn.Module):
    """``forward(x [1,3,H,W]) -> [1,H,W]`` for any depth model: transformers models are called as
    ``model(pixel_values=x).predicted_depth``, others as ``model(x)``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.transformers = _is_transformers_model(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x).predicted_depth if self.transformers else self.model(x)
        if out.dim() == 4 and out.shape[1] == 1:
            out = out[:, 0]
        return out


def depth_output(model: torch.nn.Module) -> DepthOutput:
    """``model`` wrapped in :class:`DepthOutput` (unless it already is one)."""
    return model if isinstance(model, DepthOutput) else DepthOutput(model)


# channels-last (NHWC) convolutions on the CPU: the student 1.63x, Depth-Anything-V2-Small (its DPT head)
# 1.05-1.15x at 266-518, with no start-up cost (2-core AMD EPYC, torch 2.13, one interleaved run per
# comparison; README, "torch paths"). Not measured on CUDA: off there unless asked for.
CHANNELS_LAST_ON_CPU = True


class TorchRunner:
    """The torch module itself, run in inference mode. ``half=True`` (CUDA only) runs it in fp16,
    returning float32. ``channels_last``: convolutions on NHWC tensors (weights converted once, each
    input on the way in; the numbers stay within float rounding); None = on the CPU only, where it
    was measured (:data:`CHANNELS_LAST_ON_CPU`). ``compile_mode``: ``torch.compile``'s mode
    (``"default"``, ``"max-autotune-no-cudagraphs"``...; None, the default: eager), compiled on the
    first call, which then takes 10-50 s here (README, "torch paths")."""

    backend = "torch"
    input_hw = None

    def __init__(self, model: torch.nn.Module, device: str = "cpu", half: bool = False,
                 channels_last: Optional[bool] = None, compile_mode: Optional[str] = None):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch: device %r requested but torch sees no CUDA device" % device)
        if half and not device.startswith("cuda"):
            raise ValueError("torch: half precision is for CUDA only (device %r)" % device)
        self.device = device
        self.half = bool(half)
        if channels_last is None:
            channels_last = device == "cpu" and CHANNELS_LAST_ON_CPU
        self.channels_last = bool(channels_last)
        self.module = depth_output(model).eval().to(device)
        if self.half:
            self.module.half()
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.forward = self.module if not compile_mode else torch.compile(
            self.module, mode=None if compile_mode == "default" else compile_mode)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, None, "TorchRunner")
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device)
            t = t.half() if self.half else t
            if self.channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            return as_depth(self.forward(t).float().cpu().numpy())
