"""ONNX export for TensorRT on a Jetson and for ONNX Runtime (CLI: ``python3 -m depth_estimation.export``).

:func:`export_onnx` writes one of two :data:`TARGETS`, both with the TorchScript exporter (the
newer dynamo exporter starts at opset 18):

* ``tensorrt``: opset 11 with only plain operators, so that TensorRT 7.1 (JetPack 4.4/4.5; it
  reads opsets <= 11) and 8.x (JetPack 4.6; opsets <= 13) can parse the file. The steps on the
  robot are in :mod:`depth_estimation.runtime.tensorrt_runner`;
* ``onnxruntime``: opset 17 (LayerNormalization) then ONNX Runtime's transformer fusions
  (:mod:`.ort_optimize`: MultiHeadAttention, SkipLayerNormalization, BiasGelu contrib operators),
  for ONNX Runtime on CPU or CUDA only.

:func:`tensorrt_issues` lists what TensorRT 7.1's parser would refuse in an ONNX model.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from depth_estimation.io.atomic import atomic_path
from depth_estimation.runtime.ort_runner import OrtRunner
from depth_estimation.runtime.runners import ExportError, as_depth
from depth_estimation.runtime.torch_runner import depth_output

# TensorRT 7.1 (JetPack 4.4/4.5) parses ONNX opsets up to 11, TensorRT 8.0/8.2 (JetPack 4.6) up
# to 13. Everything Depth-Anything-V2 needs exists at 11 once the export rewrites below apply:
# attention as MatMul/Softmax (ONNX's fused attention export needs opset 14), LayerNorm
# decomposed (ReduceMean/Sub/Pow/Sqrt/Div; LayerNormalization is opset 17), GELU as Erf, and the
# bicubic position-embedding interpolation folded to a constant (a fixed input size).
DEFAULT_OPSET = 11  # the tensorrt target's
TARGETS = ("tensorrt", "onnxruntime")
DEFAULT_TARGET = "tensorrt"  # what export_onnx writes unless told: the file every runtime reads
TARGET_OPSETS = {"tensorrt": DEFAULT_OPSET, "onnxruntime": 17}  # 17: LayerNormalization is an operator
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "depth"
CHECK_TOLERANCE = 1e-3  # max |onnxruntime - torch| relative to max |torch|

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


def _sdpa_as_matmul(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    """``scaled_dot_product_attention`` from MatMul/Softmax (inference: no dropout), exportable at
    opset < 14."""
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


def _sdpa_for_fusion(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    """``scaled_dot_product_attention`` as ``softmax(q k^T / sqrt(d)) v``, the pattern ONNX Runtime's
    transformer optimizer fuses into its attention operators (which scale by 1/sqrt(d)); other
    attention (a mask, causal, another scale) as :func:`_sdpa_as_matmul`."""
    root = math.sqrt(int(query.shape[-1]))
    other_scale = scale is not None and abs(scale * root - 1) > 1e-6
    if attn_mask is not None or is_causal or enable_gqa or other_scale:
        return _sdpa_as_matmul(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return torch.matmul((torch.matmul(query, key.transpose(-2, -1)) / root).softmax(-1), value)


def _interpolate_with_sizes(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.interpolate``, with ``scale_factor=..., align_corners=True`` given as the equivalent
    ``size=...`` (TensorRT 7.1 accepts align_corners only for Resize with sizes)."""
    bound = inspect.signature(F.interpolate).bind(*args, **kwargs)
    arg = bound.arguments
    if arg.get("size") is None and arg.get("scale_factor") is not None and arg.get("align_corners"):
        spatial = arg["input"].shape[2:]
        factors = arg["scale_factor"]
        factors = factors if isinstance(factors, (tuple, list)) else [factors] * len(spatial)
        arg["size"] = [int(math.floor(int(n) * float(s))) for n, s in zip(spatial, factors)]
        arg["scale_factor"] = None
        if "recompute_scale_factor" in arg:
            arg["recompute_scale_factor"] = None  # not allowed with a size
    return F.interpolate(*bound.args, **bound.kwargs)


class ExportRewrites(TorchFunctionMode):
    """Rewrites torch calls into what the export target reads best, without changing their
    numbers, for the calls made on this thread inside ``with ExportRewrites(opset, target):`` only
    (torch keeps its function modes per thread; ``torch.nn.functional`` itself is not touched):

    * ``F.interpolate(scale_factor=..., align_corners=True)`` becomes the equivalent ``size=...``
      (TensorRT 7.1);
    * ``F.scaled_dot_product_attention`` becomes MatMul/Softmax below opset 14 for ``tensorrt``,
      and the pattern ONNX Runtime fuses (:func:`_sdpa_for_fusion`) for ``onnxruntime``.
    """

    def __init__(self, opset: int, target: str = DEFAULT_TARGET):
        super().__init__()
        self.rewrites: Dict[Callable, Callable] = {F.interpolate: _interpolate_with_sizes}
        sdpa = getattr(F, "scaled_dot_product_attention", None)
        if sdpa is not None and target == "onnxruntime":
            self.rewrites[sdpa] = _sdpa_for_fusion
        elif sdpa is not None and opset < 14:
            self.rewrites[sdpa] = _sdpa_as_matmul

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # torch leaves this mode while it runs here: the calls below are not intercepted again
        return self.rewrites.get(func, func)(*args, **(kwargs or {}))


@contextlib.contextmanager
def _frozen_position_embeddings(module: torch.nn.Module, example: torch.Tensor) -> Iterator[None]:
    """Position embeddings (``interpolate_pos_encoding`` of ViT-style modules, bicubic; TensorRT 7.1
    has no cubic Resize) computed once at the export size: they enter the trace as constants. The
    method is replaced on the module instances only, and restored on the way out."""
    owners = [m for m in module.modules() if callable(getattr(m, "interpolate_pos_encoding", None))]
    cache: Dict[int, Any] = {}

    def frozen(owner, original):
        def interpolate_pos_encoding(*args, **kwargs):
            if id(owner) not in cache:  # the eager pass below
                cache[id(owner)] = original(*args, **kwargs).detach()
            return cache[id(owner)]
        return interpolate_pos_encoding

    try:
        for owner in owners:
            owner.interpolate_pos_encoding = frozen(owner, owner.interpolate_pos_encoding)
        if owners:
            with torch.no_grad():
                module(example)
        yield
    finally:
        for owner in owners:
            owner.__dict__.pop("interpolate_pos_encoding", None)


def _trace_to_onnx(wrapper: torch.nn.Module, example: torch.Tensor, path: str, opset: int,
                   target: str = DEFAULT_TARGET) -> None:
    kwargs: Dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                                  do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: the dynamo one starts at opset 18
    with _frozen_position_embeddings(wrapper, example), ExportRewrites(opset, target), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript exporter
        torch.onnx.export(wrapper, (example,), path, **kwargs)


def tensorrt_issues(model_or_path) -> List[str]:
    """What in an ONNX model TensorRT 7.1's parser (JetPack 4.4/4.5) would refuse; [] if nothing."""
    import onnx  # optional: only exporting and auditing need it

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
        elif transform == "asymmetric":  # onnx-tensorrt 7.1 computes it as align_corners: other values
            issues.append("Resize %s: asymmetric coordinates (TensorRT 7.1 computes them as "
                          "align_corners)" % node.name)
        elif mode == "nearest" and attrs.get("nearest_mode", b"round_prefer_floor").decode() != "floor":
            issues.append("Resize %s: nearest_mode other than floor" % node.name)
    return issues


def _compare_with_torch(wrapper: torch.nn.Module, onnx_path: str,
                        example: torch.Tensor) -> Dict[str, float]:
    """``max_abs_diff`` and ``rel_diff`` of ONNX Runtime against torch on another random input of
    ``example``'s shape; :class:`ExportError` beyond :data:`CHECK_TOLERANCE`."""
    x = torch.randn(tuple(example.shape), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = as_depth(wrapper(x.to(example.device)).float().cpu().numpy())
    got = OrtRunner(onnx_path, device="cpu")(x.numpy())
    if got.shape != expected.shape:
        raise ExportError("export check: onnxruntime output %s, torch %s" % (got.shape, expected.shape))
    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    rel = diff / scale if scale > 0 else diff
    if not rel < CHECK_TOLERANCE:
        raise ExportError("export check: onnxruntime differs from torch by %.3g (%.3g of the output "
                          "scale %.3g; tolerance %g)" % (diff, rel, scale, CHECK_TOLERANCE))
    return {"max_abs_diff": diff, "rel_diff": rel}


def _optimized(wrapper: torch.nn.Module, raw: str, out: str) -> Dict[str, Any]:
    """The ``onnxruntime`` target's fusions of the export ``raw``, written to ``out``."""
    from depth_estimation.runtime.ort_optimize import attention_dims, optimize_for_onnxruntime

    try:
        return optimize_for_onnxruntime(raw, out, **attention_dims(wrapper))
    except ImportError as exc:
        raise ExportError("the onnxruntime export target needs onnxruntime's transformer optimizer "
                          "(pip3 install onnxruntime): %s" % exc) from exc


def export_onnx(model, height: int, width: int, path: str, opset: Optional[int] = None, check: bool = True,
                target: str = DEFAULT_TARGET) -> Dict[str, Any]:
    """Export ``model`` for a fixed ``height`` x ``width`` input (multiples of 14 for DA2) to ONNX for
    ``target`` (one of :data:`TARGETS`; ``opset`` None: the target's, :data:`TARGET_OPSETS`).

    Input ``pixel_values`` [1,3,H,W] float32, output ``depth`` [1,H,W]. The file appears at
    ``path`` only when complete and (``check=True``) accepted by ``onnx.checker`` (before the
    ``onnxruntime`` target's fusions, whose operators are ONNX Runtime's own) and matching the
    torch output on a random input in ONNX Runtime within :data:`CHECK_TOLERANCE` relative to the
    output's scale; otherwise :class:`ExportError`. The model is put in eval mode; it may be on
    any device. torch is not patched: the rewrites (:class:`ExportRewrites`) apply to this
    thread's calls during the trace only; the model's position-embedding method is replaced on
    its instances during the export, so do not run the same model instance elsewhere meanwhile.

    Returns ``{"path", "target", "opset", "input_hw", "max_abs_diff", "rel_diff", "bytes",
    "seconds", "tensorrt_issues", "fused_ops"}`` (diffs ``None`` without check; ``fused_ops``: the
    fused operators and their counts, see :func:`.ort_optimize.fused_op_counts`) and, for
    ``onnxruntime``, ``"rewrites"`` (:func:`.ort_optimize.optimize_for_onnxruntime`).
    """
    import onnx  # optional: only exporting needs it

    from depth_estimation.runtime.ort_optimize import fused_op_counts

    if target not in TARGETS:
        raise ValueError("export target %r; use one of %s" % (target, ", ".join(TARGETS)))
    opset = int(opset) if opset is not None else TARGET_OPSETS[target]
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError("export size %dx%d" % (height, width))
    wrapper = depth_output(model).eval()
    params = next(iter(wrapper.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    example = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    with atomic_path(path) as tmp:  # renamed onto path only when everything below succeeded
        start = time.monotonic()
        raw = tmp if target == "tensorrt" else tmp + ".raw.onnx"  # beside tmp: removed with it
        _trace_to_onnx(wrapper, example, raw, opset, target)
        onnx.checker.check_model(onnx.load(raw))
        result: Dict[str, Any] = {"path": path, "target": target, "opset": opset, "input_hw": [height, width],
                                  "max_abs_diff": None, "rel_diff": None}
        if target == "onnxruntime":
            result.update(_optimized(wrapper, raw, tmp))
        result["seconds"] = round(time.monotonic() - start, 2)
        proto = onnx.load(tmp)
        result.update(bytes=os.path.getsize(tmp), tensorrt_issues=tensorrt_issues(proto),
                      fused_ops=fused_op_counts(proto))
        del proto
        if check:
            result.update(_compare_with_torch(wrapper, tmp, example))
    return result
