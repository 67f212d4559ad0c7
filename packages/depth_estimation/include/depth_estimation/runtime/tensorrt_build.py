"""Building a TensorRT engine from an exported ONNX file (TensorRT 7.1 to 10), within a Jetson Nano's
memory: :func:`check_build_memory` stops before a build that would not fit, :func:`build_engine`
frees the parser, the network and the serialized bytes as soon as each is done with, and keeps the
normalization layers in fp32 in an fp16 engine (:func:`keep_normalization_fp32`).

Imports without TensorRT (the module is passed in). See README, "On the robot".
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Optional, Tuple

from depth_estimation.runtime.runners import ExportError
from depth_estimation.runtime.memory import proc_field_mb

log = logging.getLogger(__name__)

# What a build holds besides the workspace, on a Jetson (CPU and GPU share the RAM): TensorRT 7.1
# with the cuDNN and cuBLAS it loads for its tactics (hundreds of MB), and the model three times
# (the ONNX bytes, the parsed network's weights, the engine). An estimate from NVIDIA's and users'
# public figures, not a measurement (no Jetson here); see README, "On the robot".
BUILD_LIBRARIES_MB = 600
MODEL_COPIES = 3
MEMINFO = "/proc/meminfo"
# layers of a normalization (LayerNorm exported at opset 11 as ReduceMean/Sub/Pow/ReduceMean/Add/
# Sqrt/Div/Mul/Add; TensorRT 7.1 has no fused one): by the exporter's node names, which the ONNX
# parser gives the layers, and every Reduce layer whatever its name
NORM_NAME = re.compile(r"norm", re.I)
NORM_LAYER_TYPES = ("REDUCE", "ELEMENTWISE", "UNARY")


class BuildMemoryError(RuntimeError):
    """Too little free memory to build a TensorRT engine here (one line saying what to do)."""


def available_mb(meminfo: str = MEMINFO) -> Optional[float]:
    """``MemAvailable`` of the machine in MiB (on a Jetson: what CPU and GPU can still take), or None."""
    return proc_field_mb(meminfo, "MemAvailable")


def build_memory_mb(onnx_bytes: int, workspace_mb: int) -> float:
    """The memory (MiB) a build of an ONNX file of ``onnx_bytes`` is expected to need."""
    return BUILD_LIBRARIES_MB + int(workspace_mb) + MODEL_COPIES * onnx_bytes / float(1 << 20)


def check_build_memory(onnx_path: str, workspace_mb: int, available: Optional[float] = None) -> float:
    """The expected need in MiB, or :class:`BuildMemoryError` when less memory than that is free
    (``available``: None reads :data:`MEMINFO`; unknown there: no check)."""
    need = build_memory_mb(os.path.getsize(onnx_path), workspace_mb)
    have = available_mb() if available is None else available
    if have is not None and have < need:
        raise BuildMemoryError(
            "tensorrt: building the engine for %s needs about %.0f MB of free memory and only %.0f MB "
            "are available: stop the robot's other containers and build it once with "
            "`dts devel run -H ROBOT -L build-engine`, or choose a smaller model (export at "
            "--input-size 252, or the student) or a smaller workspace_mb (README, On the robot)"
            % (os.path.basename(onnx_path), need, have))
    return need


def keep_normalization_fp32(trt, network) -> int:
    """Pin the normalization layers of ``network`` to fp32 (``layer.precision`` and output types,
    TensorRT 7.1+); the number pinned. The builder honours it with strict types (7.1) or obeyed
    precision constraints (8.2+), set by :func:`build_engine`."""
    types = {getattr(trt.LayerType, t) for t in NORM_LAYER_TYPES}
    reduce_type, fp32, pinned = trt.LayerType.REDUCE, trt.DataType.FLOAT, 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in types or not (layer.type == reduce_type or NORM_NAME.search(layer.name or "")):
            continue
        if any(layer.get_output(j).dtype != fp32 for j in range(layer.num_outputs)):
            continue  # a shape computation (INT32), not the normalization's arithmetic
        layer.precision = fp32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, fp32)
        pinned += 1
    return pinned


def _configure(trt, builder, network, fp16: bool, workspace_mb: int):
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:  # TensorRT 7.1 - 8.3
        config.max_workspace_size = int(workspace_mb) << 20
    if not fp16:
        return config
    if not getattr(builder, "platform_has_fast_fp16", True):
        log.warning("tensorrt: this GPU has no fast fp16; building fp32")
        return config
    config.set_flag(trt.BuilderFlag.FP16)
    pinned = keep_normalization_fp32(trt, network)
    if pinned:
        strict = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None)  # 8.2+; STRICT_TYPES 7.1-8.x
        config.set_flag(strict if strict is not None else trt.BuilderFlag.STRICT_TYPES)
        log.info("tensorrt: fp16 engine with its %d normalization layers in fp32", pinned)
    return config


def _parsed(trt, logger, onnx_path: str) -> Tuple[Any, Any, Any]:
    """(builder, network, parser) of ``onnx_path``; the parser owns the weights until the build."""
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # implicit in 10
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        ok = parser.parse(f.read())  # the ONNX bytes are freed when parse returns
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError("tensorrt: cannot parse %s: %s" % (onnx_path, errors))
    return builder, network, parser


def build_engine(trt, runtime, logger, onnx_path: str, fp16: bool, workspace_mb: int,
                 store: Callable[[memoryview], Any]):
    """Parse ``onnx_path``, build its engine, ``store`` the serialized bytes (a memoryview of
    TensorRT's own buffer: no copy) and return the one engine: TensorRT 7.x keeps the engine it
    built; 8.0+ deserializes the bytes it built, after the builder, network and parser are freed."""
    builder, network, parser = _parsed(trt, logger, onnx_path)
    config = _configure(trt, builder, network, fp16, workspace_mb)
    if hasattr(builder, "build_serialized_network"):  # TensorRT >= 8.0
        serialized, engine = builder.build_serialized_network(network, config), None
    else:  # TensorRT 7.x
        engine = builder.build_engine(network, config)
        serialized = engine.serialize() if engine is not None else None
    del builder, network, parser, config  # the network's weights and the builder's scratch
    if serialized is None:
        raise ExportError("tensorrt: building the engine from %s failed (see the TensorRT log above; "
                          "out of memory? lower the workspace or free memory)" % onnx_path)
    view = memoryview(serialized).cast("B")
    store(view)
    if engine is None:
        engine = runtime.deserialize_cuda_engine(serialized)
    view.release()
    del serialized
    if engine is None:
        raise ExportError("tensorrt: the engine just built from %s does not deserialize" % onnx_path)
    return engine
