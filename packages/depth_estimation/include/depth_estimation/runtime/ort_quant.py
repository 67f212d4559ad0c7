"""ONNX Runtime int8 of an exported model: the ``@int8`` spec suffix (backend ``onnxruntime`` only).

:func:`quantize_onnx` runs ONNX Runtime's dynamic quantization
(``onnxruntime.quantization.quantize_dynamic``) on the nodes that hold weights: ``MatMul`` with a
constant weight (Depth-Anything-V2's backbone linears q/k/v/o, fc1, fc2: 21.2M of Small's 24.8M
parameters; a plain export has no other) and the ``Attention`` contrib operator of an
ONNX-Runtime-optimized export (its packed QKV weight). Weights are int8 per output channel,
activations are quantized per tensor on every frame (``DynamicQuantizeLinear``; ONNX Runtime fuses
it with the integer MatMul), the DPT neck and head (Conv) stay fp32. The weight type follows the
CPU (:func:`weight_type`): ``QUInt8`` (u8u8) unless the CPU has VNNI, because without VNNI the u8s8
kernels can saturate (AVX2's ``vpmaddubsw``); with VNNI ``QInt8`` (u8s8).

Why this and not the others (random:da2-small at 266x350 on the fused onnxruntime export, 2-core
AMD EPYC with AVX2 and no VNNI, ONNX Runtime 1.32, 2 threads; median of per-round ratios to the
fp32 file, run interleaved): dynamic int8 (u8u8) is 1.22x as fast as fp32 with 35% of its bytes
and a 1.5% relative L2 change of the output; u8s8 is 1.3x but doubles that change (saturation);
weight-only blockwise ``MatMulNBits`` is not faster than fp32 here (4 bits, block 32: 0.91x with
int8 compute (accuracy level 4), 1.05x with fp32 compute, 10% output change; 8 bits: 0.80x), so
it is not offered. The fidelity figures are for random weights: the released weights were not
available here.

The quantized file is derived from whatever fp32 export the estimator makes for ONNX Runtime and
cached next to the exports (:func:`quantized_path`), keyed by that file's fingerprint (path, size,
modification time: :func:`.cache_keys.file_fingerprint`), the settings and the onnxruntime and
onnx versions. It is checked against the fp32 file on a fixed random input when made
(:data:`CHECK_TOLERANCE`). Imports onnx and ONNX Runtime only when quantizing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Dict, Iterator, Optional

import numpy as np

from depth_estimation.io.atomic import atomic_path
from depth_estimation.io.paths import cache_dir
from depth_estimation.models import cache_keys
from depth_estimation.models.specs import ModelSpec, parse_spec
from depth_estimation.runtime.runners import ExportError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
OP_TYPES = ("MatMul", "Attention")  # the operators with weights that dynamic int8 quantizes
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# the quantized file's output may differ from the fp32 file's by this much (relative L2 norm on a
# fixed random input) before it is refused: int8 measured 0.015-0.03 here; a broken one is >> 0.1
CHECK_TOLERANCE = 0.1


def is_ort_quant(spec: ModelSpec) -> bool:
    """Whether ``spec`` carries an ONNX Runtime quantization suffix (``@int8``)."""
    return spec.quant is not None and spec.quant.method == "ort"


def export_spec(spec: ModelSpec) -> ModelSpec:
    """The spec whose fp32 export is quantized: the base of ``x@int8``; ``spec`` itself otherwise."""
    return parse_spec(spec.base) if is_ort_quant(spec) else spec


def check_backend(spec: ModelSpec, backend: str) -> None:
    """ValueError (one line) when ``spec``'s quantization runs on one backend and ``backend`` is another."""
    wanted = spec.quant.backend if spec.quant is not None else None
    if wanted is not None and backend != wanted:
        raise ValueError("model %s: %s is ONNX Runtime's int8 quantization of the exported model; use "
                         "backend %s (not %s), or %s for %s" % (spec.text, spec.quant.suffix, wanted, backend,
                                                                spec.base, backend))


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return " ".join(line for line in f if line.startswith(("flags", "Features")))
    except OSError:
        return ""


def weight_type(flags: Optional[str] = None) -> str:
    """``"QInt8"`` on a CPU with VNNI (u8s8 kernels without saturation), else ``"QUInt8"`` (u8u8)."""
    words = set((_cpu_flags() if flags is None else flags).split())
    return "QInt8" if words & set(VNNI_FLAGS) else "QUInt8"


def quantized_path(fp32_path: str, bits: int = 8, weights: Optional[str] = None) -> str:
    """Where the int8 file made from ``fp32_path`` is cached: ``<fp32 name>-int8-<u8|s8>-<hash>.onnx``
    under the cache's ``onnx`` folder (no ``@`` in it: the path also works as an ``.onnx`` spec)."""
    weights = weights or weight_type()
    key = cache_keys.short_hash(cache_keys.file_fingerprint(fp32_path), "int%d" % bits, weights, OP_TYPES,
                                "per_channel", FORMAT_VERSION, cache_keys.versions("onnxruntime", "onnx"))
    stem = os.path.splitext(os.path.basename(fp32_path))[0]
    tag = "u8" if weights == "QUInt8" else "s8"
    return cache_dir("onnx", "%s-int%d-%s-%s.onnx" % (stem, bits, tag, key))


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Hide what quantize_dynamic logs on the root logger below ERROR while it runs: a line per
    tensor at INFO, and the advice to run its pre-processing (not needed: the session optimizes the
    graph when it loads it)."""
    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _random_input(session) -> Dict[str, np.ndarray]:
    """A fixed random value for the session's first input (free dimensions: 1 for the batch, else 224)."""
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 224) for i, d in enumerate(inp.shape)]
    return {inp.name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)}


def compare(fp32_path: str, quant_path: str) -> float:
    """The relative L2 difference of the two files' first outputs on a fixed random input (ONNX
    Runtime, CPU)."""
    import onnxruntime as ort  # optional: only quantizing needs it

    outputs = []
    feed: Optional[Dict[str, np.ndarray]] = None
    for path in (fp32_path, quant_path):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = feed or _random_input(session)
        outputs.append(np.asarray(session.run(None, feed)[0], dtype=np.float64))
        del session
    scale = float(np.linalg.norm(outputs[0]))
    diff = float(np.linalg.norm(outputs[1] - outputs[0]))
    return diff / scale if scale > 0 else diff


def quantize_onnx(src: str, dst: str, weights: Optional[str] = None, check: bool = True) -> Dict[str, Any]:
    """Dynamic int8 of ``src``'s weighted nodes (:data:`OP_TYPES`) written atomically to ``dst``.
    :class:`ExportError` when there is nothing to quantize or (``check``) the output moves more than
    :data:`CHECK_TOLERANCE`. Returns ``{"path", "weight_type", "quantized_nodes", "bytes",
    "src_bytes", "seconds", "rel_diff"}``."""
    import onnx  # optional: only quantizing needs it
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weights = weights or weight_type()
    start = time.monotonic()
    proto = onnx.load(src)
    constants = {i.name for i in proto.graph.initializer}
    targets = [n.name for n in proto.graph.node if n.op_type in OP_TYPES and len(n.input) > 1
               and n.input[1] in constants]
    del proto
    if not targets:
        raise ExportError("%s: no MatMul or Attention with constant weights to quantize" % src)
    with atomic_path(dst) as tmp, _quiet_quantizer():
        quantize_dynamic(src, tmp, op_types_to_quantize=list(OP_TYPES), nodes_to_quantize=targets,
                         per_channel=True, reduce_range=False, weight_type=getattr(QuantType, weights),
                         # ONNX's shape inference knows no types after ONNX Runtime's contrib operators
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        rel = compare(src, tmp) if check else None
        if rel is not None and not rel < CHECK_TOLERANCE:
            raise ExportError("int8 quantization of %s moves its output by %.3g (relative L2; tolerance %g): "
                              "use the fp32 model" % (src, rel, CHECK_TOLERANCE))
        size = os.path.getsize(tmp)
    return {"path": dst, "weight_type": weights, "quantized_nodes": len(targets), "bytes": size,
            "src_bytes": os.path.getsize(src), "seconds": round(time.monotonic() - start, 2), "rel_diff": rel}


def derive(fp32_path: str, spec: ModelSpec) -> str:
    """The ONNX file to run for ``spec``: ``fp32_path`` itself, or for ``x@int8`` its int8 copy,
    made once and cached (:func:`quantized_path`)."""
    if not is_ort_quant(spec):
        return fp32_path
    weights = weight_type()
    path = quantized_path(fp32_path, spec.quant.bits, weights)
    if not os.path.isfile(path):
        log.warning("quantizing %s to int8 with ONNX Runtime once: %s", os.path.basename(fp32_path), path)
        result = quantize_onnx(fp32_path, path, weights)
        log.info("int8: %d nodes, %.1f MB -> %.1f MB, output moved %.3g (relative L2) in %.1f s",
                 result["quantized_nodes"], result["src_bytes"] / 1e6, result["bytes"] / 1e6,
                 result["rel_diff"], result["seconds"])
    return path
