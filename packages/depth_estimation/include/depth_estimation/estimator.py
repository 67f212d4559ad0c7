"""A depth estimator with ``load()`` and ``infer()``: the one object nodes and tools hold."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from . import preprocess
from .models import ModelSpec, parse_spec
from .timing import StageTimer

log = logging.getLogger(__name__)

BACKENDS = ("torch",)
DEVICES = ("auto", "cpu", "cuda")


class DepthEstimator:
    """Relative inverse depth (larger = closer) for RGB frames.

    ``infer(rgb)`` takes an RGB uint8 HxWx3 frame and returns float32 HxW at the frame's size.
    Stage times (``preprocess``, ``infer``, ``postprocess``, in ms) go to ``self.timer``.
    """

    def __init__(self, model: str = "da2-small", input_size: int = 518, backend: str = "torch",
                 device: str = "auto", threads: int = 0, timer: Optional[StageTimer] = None):
        if backend not in BACKENDS:
            raise ValueError("backend %r; available: %s" % (backend, ", ".join(BACKENDS)))
        if device not in DEVICES:
            raise ValueError("device %r; use one of %s" % (device, ", ".join(DEVICES)))
        if input_size < 14:
            raise ValueError("input_size %d: the short side must be at least 14 pixels" % input_size)
        self.spec: ModelSpec = parse_spec(model)
        self.input_size = int(input_size)
        self.backend = backend
        self.requested_device = device
        self.threads = int(threads)
        self.timer = timer or StageTimer()
        self.device = None
        self.model = None

    @property
    def name(self) -> str:
        return self.spec.text

    def load(self) -> "DepthEstimator":
        import torch

        from . import da2

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        if self.requested_device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        use_cuda = self.requested_device == "cuda" or (
            self.requested_device == "auto" and torch.cuda.is_available())
        self.device = "cuda" if use_cuda else "cpu"
        self.model = da2.load(self.spec).to(self.device)
        log.info("loaded %s (%s, %.1fM parameters) on %s, input short side %d",
                 self.name, "random weights" if self.spec.untrained else "trained weights",
                 sum(p.numel() for p in self.model.parameters()) / 1e6, self.device, self.input_size)
        return self

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        if self.model is None:
            raise RuntimeError("call load() before infer()")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected an RGB uint8 HxWx3 image, got %s %s" % (rgb.dtype, rgb.shape))
        height, width = rgb.shape[:2]
        with self.timer.stage("preprocess"):
            x = preprocess.to_tensor(rgb, self.input_size).to(self.device)
        with self.timer.stage("infer"), torch.inference_mode():
            prediction = self.model(pixel_values=x).predicted_depth
            if self.device == "cuda":
                torch.cuda.synchronize()
        with self.timer.stage("postprocess"):
            return preprocess.to_frame_size(prediction, height, width)
