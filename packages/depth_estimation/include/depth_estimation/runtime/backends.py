"""Inference backends: PyTorch, ONNX Runtime and TensorRT behind one runner interface.

Every runner is called as ``runner(x)`` with ``x`` a float32 numpy array ``[1, 3, H, W]`` (the
normalized network input, see :func:`.preprocess.to_tensor`) and returns float32 ``[1, H, W]``
(relative inverse depth). Each has ``backend``, ``device`` and ``input_hw`` (the fixed
``(H, W)`` an exported model was built for; ``None`` when any size works).

* :class:`TorchRunner` runs the torch module itself (CPU or CUDA, optionally fp16 on CUDA).
* :class:`OrtRunner` runs an ONNX file from :func:`export_onnx` in ONNX Runtime.
* :class:`TensorRTRunner` builds a TensorRT engine from that ONNX file and runs it (Jetson).

ONNX export (:func:`export_onnx`, CLI :mod:`.export`) uses opset 11 and the TorchScript
exporter so that TensorRT 7.1 (JetPack 4.4/4.5; it reads opsets <= 11) and 8.x (JetPack 4.6;
opsets <= 13) can parse the file; the newer dynamo exporter starts at opset 18.

Jetson Nano (JetPack 4.x) steps for the TensorRT backend:

1. On a laptop: ``python3 -m depth_estimation.export da2-small --input-size 308
   --frame-size 640x480 --out da2-small-308.onnx`` (prints the ONNX Runtime check; writes
   ``da2-small-308.onnx.json`` next to it). The ONNX file has a fixed input size.
2. Put the ONNX file where the robot's container sees it (baked into the image, or under
   ``/data``) and build the image on the robot (``dts devel build -f -H ROBOT``) on a base that
   has JetPack's TensorRT and PyCUDA for the container's Python (``import tensorrt,
   pycuda.autoinit`` must work there), run with the NVIDIA runtime.
3. The first start builds the engine from the ONNX file (minutes on a Nano; fp16 by default)
   and saves it next to it as ``<stem>.fp16.engine`` (``.fp32.engine`` without fp16); later
   starts load that file in seconds. An engine belongs to one TensorRT version and one GPU:
   it is rebuilt when it cannot be loaded or is older than the ONNX file. The directory must be
   writable (else give ``engine_path=``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import math
import os
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")

# TensorRT 7.1 (JetPack 4.4/4.5) parses ONNX opsets up to 11, TensorRT 8.0/8.2 (JetPack 4.6) up
# to 13. Everything Depth-Anything-V2 needs exists at 11 once the export patches below apply:
# attention as MatMul/Softmax (ONNX's fused attention export needs opset 14), LayerNorm
# decomposed (ReduceMean/Sub/Pow/Sqrt/Div; LayerNormalization is opset 17), GELU as Erf, and the
# bicubic position-embedding interpolation folded to a constant (a fixed input size).
DEFAULT_OPSET = 11
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "depth"
CHECK_TOLERANCE = 1e-3  # max |onnxruntime - torch| relative to max |torch|

TENSORRT_MISSING = ("tensorrt: not installed here; it runs on a Jetson (JetPack 4.x, TensorRT 7.1/8.x "
                    "with PyCUDA) — see README")

# ONNX operators TensorRT 7.1's parser supports (onnx-tensorrt release 7.1, operators.md).
TENSORRT71_OPS = frozenset(
    "Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast "
    "Ceil Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh DepthToSpace "
    "DequantizeLinear Div Elu Equal Erf Exp Expand Flatten Floor Gather Gemm GlobalAveragePool "
    "GlobalMaxPool Greater GRU HardSigmoid Identity ImageScaler InstanceNormalization LeakyRelu Less "
    "Log LogSoftmax Loop LRN LSTM MatMul Max MaxPool Mean Min Mul Neg Not Or Pad ParametricSoftplus "
    "Pow PRelu QuantizeLinear RandomUniform RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu "
    "Reshape Resize RNN ScaledTanh Scan Selu Shape Sigmoid Sin Sinh Size Slice Softmax Softplus "
    "Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose "
    "Unsqueeze Upsample Where".split())


class BackendUnavailable(RuntimeError):
    """The backend's runtime is not installed (or has no device) on this machine."""


class ExportError(RuntimeError):
    """The ONNX export failed or its output does not match the torch model."""


def available_backends() -> List[str]:
    """The backends whose Python modules are installed here (found, not imported)."""
    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    out = [b for b, mods in (("torch", ("torch",)), ("onnxruntime", ("onnxruntime",)),
                             ("tensorrt", ("tensorrt", "pycuda"))) if all(found(m) for m in mods)]
    return out


def _is_transformers_model(model: Any) -> bool:
    transformers = sys.modules.get("transformers")  # not imported -> cannot be one of its models
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def _depth_output_class():
    import torch

    class DepthOutput(torch.nn.Module):
        """``forward(x [1,3,H,W]) -> [1,H,W]`` for any depth model: transformers models are called
        as ``model(pixel_values=x).predicted_depth``, others as ``model(x)``."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.transformers = _is_transformers_model(model)

        def forward(self, x):
            out = self.model(pixel_values=x).predicted_depth if self.transformers else self.model(x)
            if out.dim() == 4 and out.shape[1] == 1:
                out = out[:, 0]
            return out

    DepthOutput.__module__, DepthOutput.__qualname__ = __name__, "DepthOutput"
    globals()["DepthOutput"] = DepthOutput
    return DepthOutput


def __getattr__(name: str):  # `backends.DepthOutput` needs torch: the class is made on first use
    if name == "DepthOutput":
        return _depth_output_class()
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def depth_output(model):
    """``model`` wrapped in :class:`DepthOutput` (unless it already is one)."""
    cls = globals().get("DepthOutput") or _depth_output_class()
    return model if isinstance(model, cls) else cls(model)


def _check_input(x: Any, input_hw: Optional[Tuple[int, int]], who: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError("%s: expected a float32 array 1x3xHxW, got shape %s" % (who, tuple(x.shape)))
    if input_hw is not None and tuple(x.shape[2:]) != tuple(input_hw):
        raise ValueError("%s: input is %dx%d (HxW) but the model was exported for %dx%d; resize to "
                         "that size or export again for this one (python3 -m depth_estimation.export)"
                         % (who, x.shape[2], x.shape[3], input_hw[0], input_hw[1]))
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_depth(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 4 and y.shape[1] == 1:
        y = y[:, 0]
    return y.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------- runners


class TorchRunner:
    """The torch module itself. ``half=True`` (CUDA only) runs it in fp16, returning float32."""

    backend = "torch"
    input_hw = None

    def __init__(self, model, device: str = "cpu", half: bool = False):
        import torch

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
        import torch

        x = _check_input(x, None, "TorchRunner")
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self.device)
            out = self.module(t.half() if self.half else t)
            return _as_depth(out.float().cpu().numpy())


def _default_threads() -> int:
    torch = sys.modules.get("torch")
    return (torch.get_num_threads() if torch is not None else 0) or os.cpu_count() or 1


class OrtRunner:
    """An exported ONNX file in ONNX Runtime (CUDA execution provider when asked for and present)."""

    backend = "onnxruntime"

    def __init__(self, onnx_path: str, device: str = "auto", threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime: not installed here (pip3 install onnxruntime)") from exc
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError("onnxruntime: device %r; use auto, cpu or cuda" % device)
        if not os.path.isfile(onnx_path):
            raise FileNotFoundError("onnxruntime: no ONNX file %s (export one with "
                                    "python3 -m depth_estimation.export)" % onnx_path)
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device == "cuda" and not has_cuda:
            raise BackendUnavailable("onnxruntime: device 'cuda' requested but this onnxruntime has no "
                                     "CUDAExecutionProvider (install onnxruntime-gpu)")
        providers = (["CUDAExecutionProvider"] if device != "cpu" and has_cuda else []) + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads) if threads > 0 else _default_threads()
        self.path = onnx_path
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(onnx_path, sess_options=options, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        hw = tuple(inp.shape[2:]) if len(inp.shape) == 4 else ()
        self.input_hw = hw if len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw) else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, self.input_hw, "OrtRunner(%s)" % os.path.basename(self.path))
        return _as_depth(self.session.run([self.output_name], {self.input_name: x})[0])


class TensorRTRunner:
    """A TensorRT engine built from an exported ONNX file, cached next to it (Jetson; see module doc).

    Uses the TensorRT 7.1 Python API (explicit-batch network, ``OnnxParser``, builder config with
    ``max_workspace_size``, ``build_engine``, bindings + ``execute_v2``) and TensorRT 8's
    ``build_serialized_network`` / ``set_memory_pool_limit`` where they exist.
    """

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, onnx_path: str, fp16: bool = True, workspace_mb: int = 1024,
                 engine_path: Optional[str] = None):
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable(TENSORRT_MISSING) from exc
        try:
            import pycuda.autoinit  # creates a CUDA context on import
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendUnavailable("tensorrt: PyCUDA is missing (JetPack: pip3 install pycuda); "
                                     "see the module docstring of depth_estimation.backends") from exc
        self._trt, self._cuda = trt, cuda
        self._cuda_context = pycuda.autoinit.context  # pushed around every call: ROS calls from other threads
        self.path = onnx_path
        self.fp16 = bool(fp16)
        self.engine_path = engine_path or "%s.%s.engine" % (os.path.splitext(onnx_path)[0],
                                                            "fp16" if fp16 else "fp32")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # must outlive the engine
        self.engine = self._load_engine() or self._build_engine(int(workspace_mb))
        self.context = self.engine.create_execution_context()
        self._host, self._device_mem, self.bindings = [], [], []
        for i in range(self.engine.num_bindings):
            shape = tuple(self.engine.get_binding_shape(i))
            host = cuda.pagelocked_empty(int(np.prod(shape)), trt.nptype(self.engine.get_binding_dtype(i)))
            mem = cuda.mem_alloc(host.nbytes)
            self._host.append((host, shape, self.engine.binding_is_input(i)))
            self._device_mem.append(mem)
            self.bindings.append(int(mem))
        ins = [i for i, (_, _, is_input) in enumerate(self._host) if is_input]
        outs = [i for i, (_, _, is_input) in enumerate(self._host) if not is_input]
        if len(ins) != 1 or len(outs) != 1:
            raise ExportError("tensorrt: expected one input and one output binding, got %d and %d"
                              % (len(ins), len(outs)))
        self._in, self._out = ins[0], outs[0]
        self.input_hw = tuple(int(d) for d in self._host[self._in][1][2:])

    def _load_engine(self):
        path = self.engine_path
        if not os.path.isfile(path):
            return None
        if os.path.isfile(self.path) and os.path.getmtime(path) < os.path.getmtime(self.path):
            log.warning("tensorrt: %s is older than %s; rebuilding it", path, self.path)
            return None
        with open(path, "rb") as f:
            data = f.read()
        try:
            engine = self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # another TensorRT version or GPU: rebuild
            log.warning("tensorrt: cannot load %s (%s); rebuilding it", path, exc)
            return None
        if engine is None:
            log.warning("tensorrt: cannot load %s (built by another TensorRT?); rebuilding it", path)
        return engine

    def _build_engine(self, workspace_mb: int):
        trt = self._trt
        if not os.path.isfile(self.path):
            raise FileNotFoundError("tensorrt: no ONNX file %s (export one with "
                                    "python3 -m depth_estimation.export)" % self.path)
        log.warning("tensorrt: building %s from %s (%s); this takes minutes on a Jetson Nano",
                    self.engine_path, self.path, "fp16" if self.fp16 else "fp32")
        start = time.monotonic()
        builder = trt.Builder(self._logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        parser = trt.OnnxParser(network, self._logger)
        with open(self.path, "rb") as f:
            if not parser.parse(f.read()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise ExportError("tensorrt: cannot parse %s: %s" % (self.path, errors))
        config = builder.create_builder_config()
        if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        else:  # TensorRT 7.1 - 8.2
            config.max_workspace_size = workspace_mb << 20
        if self.fp16:
            if builder.platform_has_fast_fp16:
                config.set_flag(trt.BuilderFlag.FP16)
            else:
                log.warning("tensorrt: this GPU has no fast fp16; building fp32")
        if hasattr(builder, "build_serialized_network"):  # TensorRT >= 8.0
            data = builder.build_serialized_network(network, config)
        else:  # TensorRT 7.x
            engine = builder.build_engine(network, config)
            data = engine.serialize() if engine is not None else None
        if data is None:
            raise ExportError("tensorrt: building the engine from %s failed (see the TensorRT log above)"
                              % self.path)
        data = bytes(data)
        try:
            _atomic_write_bytes(self.engine_path, data)
        except OSError as exc:
            log.warning("tensorrt: cannot save %s (%s); the engine is rebuilt on every start",
                        self.engine_path, exc)
        log.warning("tensorrt: engine built in %.0f s (%.1f MB)", time.monotonic() - start, len(data) / 1e6)
        return self._runtime.deserialize_cuda_engine(data)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_input(x, self.input_hw, "TensorRTRunner(%s)" % os.path.basename(self.path))
        cuda = self._cuda
        host_in = self._host[self._in][0]
        host_out, out_shape, _ = self._host[self._out]
        np.copyto(host_in, x.ravel().astype(host_in.dtype, copy=False))
        self._cuda_context.push()
        try:
            cuda.memcpy_htod(self._device_mem[self._in], host_in)
            if not self.context.execute_v2(bindings=self.bindings):
                raise RuntimeError("tensorrt: execute_v2 failed")
            cuda.memcpy_dtoh(host_out, self._device_mem[self._out])
        finally:
            self._cuda_context.pop()
        return _as_depth(host_out.reshape(out_shape).astype(np.float32, copy=True))


# ---------------------------------------------------------------------------------------- export


def _atomic_write_bytes(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sdpa_as_matmul(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    """``scaled_dot_product_attention`` from MatMul/Softmax (inference: no dropout), exportable at
    opset < 14."""
    import torch

    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    scale = scale if scale is not None else 1.0 / math.sqrt(int(query.shape[-1]))
    scores = torch.matmul(query * scale, key.transpose(-2, -1))
    if is_causal:
        n_q, n_k = int(query.shape[-2]), int(key.shape[-2])
        keep = torch.arange(n_q).unsqueeze(1) >= torch.arange(n_k).unsqueeze(0)
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    return torch.matmul(scores.softmax(-1), value)


@contextlib.contextmanager
def _export_patches(module, example, opset: int) -> Iterator[None]:
    """Make a fixed-size trace TensorRT 7.1 can read, without changing the model's numbers:

    * position embeddings (``interpolate_pos_encoding`` of ViT-style modules, bicubic; TensorRT 7.1
      has no cubic Resize) are computed once at the export size and enter the graph as constants;
    * ``F.interpolate(scale_factor=..., align_corners=True)`` becomes the equivalent ``size=...``
      (TensorRT 7.1 accepts align_corners only for Resize with sizes);
    * below opset 14, ``F.scaled_dot_product_attention`` becomes MatMul/Softmax.
    """
    import torch
    import torch.nn.functional as F

    owners = [m for m in module.modules() if callable(getattr(m, "interpolate_pos_encoding", None))]
    cache: Dict[int, Any] = {}

    def frozen(owner, original):
        def interpolate_pos_encoding(*args, **kwargs):
            if id(owner) not in cache:  # the eager pass below
                cache[id(owner)] = original(*args, **kwargs).detach()
            return cache[id(owner)]
        return interpolate_pos_encoding

    original_interpolate = F.interpolate

    def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None, *args, **kwargs):
        if size is None and scale_factor is not None and align_corners:
            spatial = input.shape[2:]
            factors = scale_factor if isinstance(scale_factor, (tuple, list)) else [scale_factor] * len(spatial)
            size = [int(math.floor(int(n) * float(s))) for n, s in zip(spatial, factors)]
            scale_factor = None
            kwargs.pop("recompute_scale_factor", None)  # not allowed with a size
            args = (None,) + args[1:] if args else args
        return original_interpolate(input, size, scale_factor, mode, align_corners, *args, **kwargs)

    original_sdpa = getattr(F, "scaled_dot_product_attention", None)
    try:
        for owner in owners:
            owner.interpolate_pos_encoding = frozen(owner, owner.interpolate_pos_encoding)
        with torch.no_grad():
            module(example)
        F.interpolate = interpolate
        if original_sdpa is not None and opset < 14:
            F.scaled_dot_product_attention = _sdpa_as_matmul
        yield
    finally:
        F.interpolate = original_interpolate
        if original_sdpa is not None:
            F.scaled_dot_product_attention = original_sdpa
        for owner in owners:
            owner.__dict__.pop("interpolate_pos_encoding", None)


def tensorrt_issues(model_or_path) -> List[str]:
    """What in an ONNX model TensorRT 7.1's parser (JetPack 4.4/4.5) would refuse; [] if nothing."""
    import onnx

    proto = onnx.load(model_or_path) if isinstance(model_or_path, str) else model_or_path
    issues = []
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > 11:
        issues.append("opset %d: TensorRT 7.1 reads opsets <= 11 (TensorRT 8.0/8.2 <= 13)" % opset)
    unsupported = sorted({n.op_type for n in proto.graph.node} - TENSORRT71_OPS)
    if unsupported:
        issues.append("operators TensorRT 7.1 lacks: %s" % ", ".join(unsupported))
    for node in proto.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("mode", b"nearest").decode()
        transform = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
        has_sizes = len(node.input) >= 4 and bool(node.input[3])
        if mode == "cubic":
            issues.append("Resize %s: cubic interpolation" % node.name)
        elif transform == "align_corners" and not has_sizes:
            issues.append("Resize %s: align_corners with scales (TensorRT 7.1 needs sizes)" % node.name)
        elif mode == "nearest" and attrs.get("nearest_mode", b"round_prefer_floor").decode() != "floor":
            issues.append("Resize %s: nearest_mode other than floor" % node.name)
    return issues


def export_onnx(model, height: int, width: int, path: str, opset: int = DEFAULT_OPSET,
                check: bool = True) -> Dict[str, Any]:
    """Export ``model`` for a fixed ``height`` x ``width`` input (multiples of 14 for DA2) to ONNX.

    Input ``pixel_values`` [1,3,H,W] float32, output ``depth`` [1,H,W]. The file appears at
    ``path`` only when complete and (``check=True``) accepted by ``onnx.checker`` and matching the
    torch output on a random input in ONNX Runtime within :data:`CHECK_TOLERANCE` relative to the
    output's scale; otherwise :class:`ExportError`. The model is put in eval mode; it may be on
    any device. Not thread-safe (torch functions are patched during the trace).

    Returns ``{"path", "opset", "input_hw", "max_abs_diff", "rel_diff", "bytes", "seconds",
    "tensorrt_issues"}`` (diffs ``None`` without check).
    """
    import warnings

    import onnx
    import torch

    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError("export size %dx%d" % (height, width))
    wrapper = depth_output(model).eval()
    params = next(iter(wrapper.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    example = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)

    kwargs: Dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=int(opset),
                                  do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: the dynamo one starts at opset 18
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    start = time.monotonic()
    try:
        with _export_patches(wrapper, example, int(opset)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript exporter
            torch.onnx.export(wrapper, (example,), tmp, **kwargs)
        seconds = time.monotonic() - start
        proto = onnx.load(tmp)
        onnx.checker.check_model(proto)
        result: Dict[str, Any] = {"path": path, "opset": int(opset), "input_hw": [height, width],
                                  "max_abs_diff": None, "rel_diff": None, "bytes": os.path.getsize(tmp),
                                  "seconds": round(seconds, 2), "tensorrt_issues": tensorrt_issues(proto)}
        del proto
        if check:
            x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1))
            with torch.inference_mode():
                expected = _as_depth(wrapper(x.to(device)).float().cpu().numpy())
            got = OrtRunner(tmp, device="cpu")(x.numpy())
            if got.shape != expected.shape:
                raise ExportError("export check: onnxruntime output %s, torch %s" % (got.shape, expected.shape))
            diff = float(np.abs(got - expected).max())
            scale = float(np.abs(expected).max())
            rel = diff / scale if scale > 0 else diff
            result.update(max_abs_diff=diff, rel_diff=rel)
            if not rel < CHECK_TOLERANCE:
                raise ExportError("export check: onnxruntime differs from torch by %.3g (%.3g of the output "
                                  "scale %.3g; tolerance %g)" % (diff, rel, scale, CHECK_TOLERANCE))
        os.replace(tmp, path)
        return result
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
