"""A depth estimator with ``load()`` and ``infer()``: the one object nodes and tools hold.

torch is imported only on the torch paths (loading and exporting a torch network): an ``.onnx``
spec on ONNX Runtime or TensorRT runs without it, as the robot's TensorRT image must.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any, NamedTuple, Optional, Tuple

import numpy as np

from depth_estimation.io.paths import cache_dir
from depth_estimation.models import cache_keys
from depth_estimation.models.specs import ModelSpec, parse_spec, safe_name
from depth_estimation.options import BACKEND_CHOICES, DEVICES, input_size_value
from depth_estimation.runtime import memory, ort_quant, preprocess
from depth_estimation.runtime.engine_cache import DEFAULT_WORKSPACE_MB
from depth_estimation.runtime.ort_runner import OrtRunner
from depth_estimation.runtime.runners import resolve_backend
from depth_estimation.runtime.tensorrt_runner import TensorRTRunner
from depth_estimation.runtime.timing import StageTimer

log = logging.getLogger(__name__)

# ONNX sessions (TensorRT engines) kept per estimator, least recently used closed first: each holds
# a copy of the weights; frames of many sizes (DA-2K, labelling) share few input shapes anyway
# (preprocess.bucket_shape), this bounds the rest.
MAX_RUNNERS = 4
# what makes an export's content: torch traces it, transformers' code is what is traced, hqq
# dequantizes quantized specs, onnx checks (and may upgrade) it. ONNX Runtime only runs the file
# (TensorRT's engines are keyed next to it, see tensorrt_runner).
EXPORT_VERSIONS = ("torch", "transformers", "onnx")
# the export target each backend runs (runtime.onnx_export.TARGETS): TensorRT 7.1's opset-11 file, or
# ONNX Runtime's fused one (its transformer optimizer makes that file: its version is in the key)
TARGET_VERSIONS = {"tensorrt": (), "onnxruntime": ("onnxruntime",)}


def onnx_target(backend: str) -> str:
    """The export target of a backend: ``tensorrt`` for TensorRT, ``onnxruntime`` otherwise."""
    return "tensorrt" if backend == "tensorrt" else "onnxruntime"


def onnx_cache_path(spec: ModelSpec, hw: Tuple[int, int], opset: int, target: str = "tensorrt") -> str:
    """Where the export of ``spec`` at input ``hw``, ``opset`` and for ``target`` is cached:
    ``<spec sanitised>-<h>x<w>[-ort]-<hash>.onnx``, the hash of the weights' content
    (:func:`.cache_keys.weights_fingerprint`), the quantization, input size, opset, target and the
    versions that make the file, so that changed weights or libraries export again."""
    versions = EXPORT_VERSIONS + TARGET_VERSIONS[target] + (
        ("hqq",) if spec.quant is not None or spec.kind == "quantized_dir" else ())
    key = cache_keys.short_hash(cache_keys.weights_fingerprint(spec), spec.quant and spec.quant.suffix,
                                spec.quant and spec.quant.group_size, tuple(hw), opset, target,
                                cache_keys.versions(*versions))
    tag = "-ort" if target == "onnxruntime" else ""
    return cache_dir("onnx", "%s-%dx%d%s-%s.onnx" % (safe_name(spec.text), hw[0], hw[1], tag, key))


def auto_needs(spec: ModelSpec) -> Optional[str]:
    """The backend ``auto`` must take for ``spec``: ONNX Runtime for ``@int8``, torch for packed HQQ
    (``@hqqN``: its point is the memory, which an export loses by dequantizing), else None (any)."""
    if spec.quant is not None and spec.quant.method == "hqq" and not spec.quant.dequantize:
        return "torch"
    return spec.quant.backend if spec.quant is not None else None


class Prepared(NamedTuple):
    """A frame made ready for the network by :meth:`DepthEstimator.prepare`."""

    x: np.ndarray  # float32 [1, 3, h, w]
    window: Any  # where the frame sits in a letterboxed input (None: not letterboxed)
    hw: Tuple[int, int]  # network input
    frame_hw: Tuple[int, int]
    runner: Any


class DepthEstimator:
    """Relative inverse depth (larger = closer) for RGB frames.

    ``infer(rgb)`` takes an RGB uint8 HxWx3 frame and returns float32 HxW at the frame's size.
    Stage times (``preprocess``, ``infer``, ``postprocess``, in ms) go to ``self.timer``.
    ``input_size`` is the short side of the network input, rounded at ``load()`` to the model's
    multiple (14 for Depth-Anything-V2, 32 for the student; a warning says so), and then the value
    the network really runs at; 0 or None = the model's own size.

    With ``backend="onnxruntime"`` or ``"tensorrt"`` a torch model is exported to ONNX once per
    input shape (cached in ``~/.cache/depth_estimation/onnx``, keyed by content: see
    :func:`onnx_cache_path`); the shapes come from a few aspect ratios
    (:func:`.preprocess.bucket_shape`) and at most ``max_runners`` sessions stay open. An ``.onnx``
    spec is used as is. Fixed-size inputs take the frame letterboxed (aspect ratio kept, padded,
    the output cropped back: :func:`.preprocess.letterbox`).

    TensorRT only: ``tensorrt_fp16`` (default True) builds fp16 engines, ``workspace_mb`` bounds the
    builder's scratch memory (default for the 2 GB Jetson Nano), ``engine_dir`` is where engines are
    cached across restarts (None: :func:`.engine_cache.engine_dir`, ``/data/config/...`` on a robot).
    """

    def __init__(self, model: str = "da2-small", input_size: Optional[int] = None, backend: str = "torch",
                 device: str = "auto", threads: int = 0, half: bool = False,
                 timer: Optional[StageTimer] = None, max_runners: int = MAX_RUNNERS,
                 engine_dir: Optional[str] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 tensorrt_fp16: bool = True):
        if backend not in BACKEND_CHOICES:
            raise ValueError("backend %r; use one of %s" % (backend, ", ".join(BACKEND_CHOICES)))
        if device not in DEVICES:
            raise ValueError("device %r; use one of %s" % (device, ", ".join(DEVICES)))
        input_size = input_size_value(input_size)  # 0 or None -> None: the model's own size
        if input_size is not None and input_size < 14:
            raise ValueError("input_size %d: the short side must be at least 14 pixels" % input_size)
        if int(max_runners) < 1:
            raise ValueError("max_runners %d: keep at least one runner" % max_runners)
        if int(workspace_mb) <= 0:
            raise ValueError("workspace_mb %r: the TensorRT builder needs a positive workspace"
                             % workspace_mb)
        self.spec: ModelSpec = parse_spec(model)
        self.requested_backend = backend
        backend, self.backend_reason = resolve_backend(backend, self.spec.family == "onnx", device,
                                                       need=auto_needs(self.spec))
        if self.spec.family == "onnx" and backend == "torch":
            raise ValueError("model %s is an ONNX file: use backend onnxruntime or tensorrt" % model)
        ort_quant.check_backend(self.spec, backend)  # @int8: ONNX Runtime only
        self.input_size = input_size
        self.backend, self.requested_device = backend, device
        self.threads, self.half = int(threads), bool(half)
        self.timer = timer or StageTimer()
        self.max_runners = int(max_runners)
        self.engine_dir, self.workspace_mb = engine_dir, int(workspace_mb)
        self.tensorrt_fp16 = bool(tensorrt_fp16)
        self.device: Optional[str] = None
        self.net = None
        self.multiple = preprocess.PATCH
        self._single = None  # the torch runner, or an .onnx spec's runner: one for every input
        self._runners: "collections.OrderedDict[Tuple[int, int], object]" = collections.OrderedDict()
        self._lock = threading.Lock()  # one runner built at a time (a TensorRT build takes minutes)
        self._table = threading.Lock()  # _runners itself: held for a lookup or a change, never a build

    @property
    def name(self) -> str:
        return self.spec.text

    @property
    def backend_text(self) -> str:
        """The backend, and why when ``auto`` chose it: ``onnxruntime (auto: CPU: ...)``."""
        if self.requested_backend != "auto":
            return self.backend
        return "%s (auto: %s)" % (self.backend, self.backend_reason)

    def load(self) -> "DepthEstimator":
        if self.spec.family == "onnx":
            self._load_onnx_file()
        else:
            self._load_net()
        log.info("loaded %s (%s) with backend %s on %s, input short side %s", self.name,
                 "random weights" if self.spec.untrained else "trained weights", self.backend_text,
                 self.device, self.input_size)
        return self

    def _load_onnx_file(self) -> None:
        """An ``.onnx`` spec: its runner, and its fixed input's short side as ``input_size``."""
        runner = self._single = self._make_runner(self.spec.path)
        self.device = runner.device
        if runner.input_hw is not None:
            if self.input_size not in (None, min(runner.input_hw)):
                log.info("%s has a fixed %dx%d input: input size %d", self.name, runner.input_hw[0],
                         runner.input_hw[1], min(runner.input_hw))
            self.input_size = min(runner.input_hw)
        else:  # an ONNX file with a dynamic input: any size
            self._round_input_size(518)

    def _load_net(self) -> None:
        import torch  # heavy, and only here: a torch network is loaded (an .onnx spec needs none)

        from depth_estimation.models import loading  # heavy (torch, transformers)
        if self.requested_device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        self.device = "cuda" if self.requested_device == "cuda" or (
            self.requested_device == "auto" and torch.cuda.is_available()) else "cpu"
        # ONNX has no HQQ kernels: exports hold the dequantized weights (the same values)
        self.net = loading.load_net(ort_quant.export_spec(self.spec), dequantize=self.backend != "torch")
        self.multiple = self.net.multiple
        self._round_input_size(self.net.default_input_size)
        if self.backend == "torch":
            from depth_estimation.runtime.torch_runner import TorchRunner  # heavy (torch)
            self._single = TorchRunner(self.net.to(self.device), self.device, self.half)

    def _round_input_size(self, default: int) -> None:
        """``input_size`` as the network runs it: the model's own, or rounded to its multiple."""
        if self.input_size is None:
            self.input_size = default
            return
        effective = preprocess.round_to_multiple(self.input_size, self.multiple)
        if effective != self.input_size:
            log.warning("input size %d is no multiple of %d (model %s): running at input size %d",
                        self.input_size, self.multiple, self.name, effective)
        self.input_size = effective

    def input_hw(self, height: int, width: int) -> Tuple[int, int]:
        """The network input size for a frame of ``height`` x ``width``."""
        fixed = getattr(self._single, "input_hw", None)
        if fixed is not None:
            return tuple(fixed)
        if self._single is not None:  # the torch network or a dynamic ONNX file: any size
            return preprocess.input_shape(height, width, self.input_size, self.multiple)
        return preprocess.bucket_shape(height, width, self.input_size, self.multiple)

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        """Depth (float32, the frame's size) of an RGB uint8 frame: :meth:`prepare`, :meth:`run`,
        :meth:`finish` in turn (the node's stream runs the three in separate threads)."""
        prepared = self.prepare(rgb)
        return self.finish(prepared, self.run(prepared))

    def warm_up(self, rgb: np.ndarray) -> np.ndarray:
        """:meth:`infer` once at start-up, with the runner's self-check on that frame where it has one
        (TensorRT: finite output, and the same as ONNX Runtime's where that is installed)."""
        prepared = self.prepare(rgb)
        prediction = self.run(prepared)
        check = getattr(prepared.runner, "self_check", None)
        if check is not None:
            check(prepared.x, prediction)
        return self.finish(prepared, prediction)

    def prepare(self, rgb: np.ndarray) -> "Prepared":
        """The network input for an RGB uint8 frame (resized, normalised, letterboxed for a fixed-size
        runner) and what :meth:`finish` needs to map the prediction back to the frame."""
        if self.device is None:
            raise RuntimeError("call load() before infer()")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected an RGB uint8 HxWx3 image, got %s %s" % (rgb.dtype, rgb.shape))
        height, width = rgb.shape[:2]
        hw = self.input_hw(height, width)
        runner = self.runner_for(hw)
        with self.timer.stage("preprocess"):
            if runner.input_hw is None:
                x, window = preprocess.normalize(rgb, *hw), None
            else:
                x, window = preprocess.letterbox(rgb, hw, self._content_hw(height, width, hw))
        return Prepared(x, window, tuple(hw), (height, width), runner)

    def run(self, prepared: "Prepared") -> np.ndarray:
        """The network on a prepared input: its raw prediction."""
        with self.timer.stage("infer"):
            return prepared.runner(prepared.x)

    def finish(self, prepared: "Prepared", prediction: np.ndarray) -> np.ndarray:
        """A raw prediction back at the frame's size (float32 HxW)."""
        with self.timer.stage("postprocess"):
            return preprocess.unletterbox(prediction, prepared.window, prepared.hw, *prepared.frame_hw)

    def _content_hw(self, height: int, width: int, box: Tuple[int, int]) -> Tuple[int, int]:
        """The frame's size inside a fixed ``box`` input: the model's own shape at the box's short
        side when it fits (always for a bucket), else the largest that keeps the aspect ratio."""
        natural = preprocess.input_shape(height, width, min(box), self.multiple)
        if natural[0] <= box[0] and natural[1] <= box[1]:
            return natural
        return preprocess.fit_inside(height, width, box[0], box[1])

    def onnx_path(self, hw: Tuple[int, int]) -> Optional[str]:
        """The ONNX file a non-torch backend runs at input ``hw`` (None for torch)."""
        if self.backend == "torch":
            return None
        return self.spec.path if self.spec.family == "onnx" else self._onnx_for(hw)

    def runner_for(self, hw: Tuple[int, int]):
        """The backend runner for network input ``hw`` (ONNX backends: exported on first use; the
        ``max_runners`` most recently used stay open)."""
        if self._single is not None:
            return self._single
        hw = tuple(hw)
        with self._lock:
            with self._table:
                runner = self._runners.get(hw)
            if runner is None:
                runner = self._make_runner(self._onnx_for(hw))
            with self._table:
                self._runners[hw] = runner
                self._runners.move_to_end(hw)
                while len(self._runners) > self.max_runners:
                    old, _ = self._runners.popitem(last=False)
                    log.info("closed the %s session for input %dx%d (at most %d stay open)",
                             self.backend, old[0], old[1], self.max_runners)
            return runner

    def open_runners(self) -> list:
        """The runners open now (a snapshot, safe while another thread opens or closes one)."""
        with self._table:
            return ([self._single] if self._single is not None else []) + list(self._runners.values())

    def _make_runner(self, onnx_path: str):
        if self.backend == "tensorrt":  # fp16 by default: the Jetson's fast path
            return TensorRTRunner(onnx_path, fp16=self.tensorrt_fp16, workspace_mb=self.workspace_mb,
                                  engine_dir=self.engine_dir)
        return OrtRunner(onnx_path, device=self.requested_device, threads=self.threads)

    def memory_stats(self):
        """``{"rss_mb", "gpu_mem_mb"}`` of this process (:func:`.memory.memory_stats`; None where
        not readable)."""
        return memory.memory_stats(self)

    def _onnx_for(self, hw: Tuple[int, int]) -> str:
        """The ONNX export of this model at input ``hw``, made once and cached."""
        from depth_estimation.runtime.onnx_export import TARGET_OPSETS, export_onnx  # heavy (torch)

        target = onnx_target(self.backend)
        spec = ort_quant.export_spec(self.spec)  # @int8: its base's export
        path = onnx_cache_path(spec, hw, TARGET_OPSETS[target], target)
        if not os.path.isfile(path):
            log.warning("exporting %s to ONNX for %s at %dx%d once: %s", self.name, target, hw[0], hw[1],
                        path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            export_onnx(self.net, hw[0], hw[1], path, target=target)
        return ort_quant.derive(path, self.spec)  # @int8: the int8 copy, made once
