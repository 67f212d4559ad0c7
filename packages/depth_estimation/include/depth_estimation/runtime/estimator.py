"""A depth estimator with ``load()`` and ``infer()``: the one object nodes and tools hold."""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Dict, Optional, Tuple

import numpy as np

from depth_estimation.runtime import preprocess
from depth_estimation.io.paths import cache_dir
from depth_estimation.models.specs import ModelSpec, parse_spec, safe_name
from depth_estimation.runtime.timing import StageTimer

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")


class DepthEstimator:
    """Relative inverse depth (larger = closer) for RGB frames.

    ``infer(rgb)`` takes an RGB uint8 HxWx3 frame and returns float32 HxW at the frame's size.
    Stage times (``preprocess``, ``infer``, ``postprocess``, in ms) go to ``self.timer``.
    With ``backend="onnxruntime"`` or ``"tensorrt"`` a torch model is exported to ONNX once per
    input size (cached in ``~/.cache/depth_estimation/onnx``); an ``.onnx`` spec is used as is.
    """

    def __init__(self, model: str = "da2-small", input_size: Optional[int] = 518, backend: str = "torch",
                 device: str = "auto", threads: int = 0, half: bool = False, timer: Optional[StageTimer] = None):
        if backend not in BACKENDS:
            raise ValueError("backend %r; use one of %s" % (backend, ", ".join(BACKENDS)))
        if device not in DEVICES:
            raise ValueError("device %r; use one of %s" % (device, ", ".join(DEVICES)))
        if input_size is not None and int(input_size) < 14:
            raise ValueError("input_size %d: the short side must be at least 14 pixels" % input_size)
        self.spec: ModelSpec = parse_spec(model)
        if self.spec.family == "onnx" and backend == "torch":
            raise ValueError("model %s is an ONNX file: use backend onnxruntime or tensorrt" % model)
        self.input_size = None if input_size is None else int(input_size)
        self.backend, self.requested_device = backend, device
        self.threads, self.half = int(threads), bool(half)
        self.timer = timer or StageTimer()
        self.device: Optional[str] = None
        self.net = None
        self.multiple = preprocess.PATCH
        self._runners: Dict[Tuple[int, int], object] = {}

    @property
    def name(self) -> str:
        return self.spec.text

    def load(self) -> "DepthEstimator":
        import torch

        from depth_estimation.runtime import backends
        from depth_estimation.models import loading
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        if self.requested_device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        self.device = "cuda" if self.requested_device == "cuda" or (
            self.requested_device == "auto" and torch.cuda.is_available()) else "cpu"
        if self.spec.family == "onnx":
            runner = self._make_runner(self.spec.path)
            self._runners[tuple(runner.input_hw)] = runner
        else:
            net_spec = self.spec
            if self.backend != "torch" and self.spec.quant is not None and not self.spec.quant.dequantize:
                # ONNX has no HQQ kernels: the export holds the dequantized weights (same values)
                net_spec = parse_spec("%s@hqq%d-dq" % (self.spec.base, self.spec.quant.bits))
            self.net = loading.load_net(net_spec)
            self.multiple = self.net.multiple
            if self.input_size is None:
                self.input_size = self.net.default_input_size
            if self.backend == "torch":
                self._runners[None] = backends.TorchRunner(self.net.to(self.device), self.device, self.half)
        log.info("loaded %s (%s) with backend %s on %s, input short side %s", self.name,
                 "random weights" if self.spec.untrained else "trained weights", self.backend, self.device,
                 self.input_size)
        return self

    def input_hw(self, height: int, width: int) -> Tuple[int, int]:
        """The network input size for a frame of ``height`` x ``width``."""
        if self.spec.family == "onnx":
            return next(iter(self._runners))
        return preprocess.input_shape(height, width, self.input_size, self.multiple)

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        if self.device is None:
            raise RuntimeError("call load() before infer()")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected an RGB uint8 HxWx3 image, got %s %s" % (rgb.dtype, rgb.shape))
        height, width = rgb.shape[:2]
        hw = self.input_hw(height, width)
        runner = self.runner_for(hw)
        with self.timer.stage("preprocess"):
            x = preprocess.normalize(rgb, *hw)
        with self.timer.stage("infer"):
            prediction = runner(x)
        with self.timer.stage("postprocess"):
            return preprocess.to_frame_size(prediction, height, width)

    def onnx_path(self, hw: Tuple[int, int]) -> Optional[str]:
        """The ONNX file a non-torch backend runs at input ``hw`` (None for torch)."""
        if self.backend == "torch":
            return None
        return self.spec.path if self.spec.family == "onnx" else self._onnx_for(hw)

    def runner_for(self, hw: Tuple[int, int]):
        """The backend runner for network input ``hw`` (ONNX backends: exported on first use)."""
        runner = self._runners.get(None) or self._runners.get(hw)
        if runner is None:
            runner = self._runners[hw] = self._make_runner(self._onnx_for(hw))
        return runner

    def _make_runner(self, onnx_path: str):
        from depth_estimation.runtime import backends
        if self.backend == "tensorrt":
            return backends.TensorRTRunner(onnx_path, fp16=self.half or self.device == "cuda")
        return backends.OrtRunner(onnx_path, device=self.requested_device)

    def _onnx_for(self, hw: Tuple[int, int]) -> str:
        """The ONNX export of this model at input ``hw``, made once and cached."""
        from depth_estimation.runtime import backends
        stamp = self.spec.path and os.path.getmtime(self.spec.path)
        key = hashlib.sha1(("%s|%s" % (self.spec.text, stamp)).encode()).hexdigest()[:10]
        path = cache_dir("onnx", "%s-%dx%d-%s.onnx" % (safe_name(self.spec.text), hw[0], hw[1], key))
        if not os.path.isfile(path):
            log.warning("exporting %s to ONNX at %dx%d once: %s", self.name, hw[0], hw[1], path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            backends.export_onnx(self.net, hw[0], hw[1], path)
        return path
