"""The torch backend: :class:`DepthOutput` (any depth model as ``x -> [1, H, W]``) and
:class:`TorchRunner` (the torch module itself, CPU or CUDA, optionally fp16 on CUDA)."""
from __future__ import annotations

import sys
from typing import Any

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


class TorchRunner:
    """The torch module itself. ``half=True`` (CUDA only) runs it in fp16, returning float32."""

    backend = "torch"
    input_hw = None

    def __init__(self, model: torch.nn.Module, device: str = "cpu", half: bool = False):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch: device %r requested but torch sees no CUDA device" % device)
        if half and not device.startswith("cuda"):
            raise ValueError("torch: half precision is for CUDA only (device %r)" % device)
        self.device = device
        self.half = bool(half)
        self.module = depth_output(model).eval().to(device)
        if self.half:
            self.module.half()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, None, "TorchRunner")
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device)
            out = self.module(t.half() if self.half else t)
            return as_depth(out.float().cpu().numpy())
