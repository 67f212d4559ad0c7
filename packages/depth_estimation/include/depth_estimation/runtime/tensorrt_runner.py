"""The TensorRT backend: :class:`TensorRTRunner` builds an engine from an exported ONNX file, caches
it next to that file and runs it (Jetson). Imports without torch and without TensorRT/PyCUDA.

Jetson Nano (JetPack 4.x) steps for the TensorRT backend:

1. On a laptop: ``python3 -m depth_estimation.export da2-small --input-size 308
   --frame-size 640x480 --out da2-small-308.onnx`` (prints the ONNX Runtime check; writes
   ``da2-small-308.onnx.json`` next to it). The ONNX file has a fixed input size, opset 11
   (:mod:`depth_estimation.runtime.onnx_export`), which TensorRT 7.1 and 8.x parse.
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

import logging
import os
import time
from typing import Optional

import numpy as np

from depth_estimation.io.atomic import write_bytes
from depth_estimation.runtime.runners import BackendUnavailable, ExportError, as_depth, check_input

log = logging.getLogger(__name__)

TENSORRT_MISSING = ("tensorrt: not installed here; it runs on a Jetson (JetPack 4.x, TensorRT 7.1/8.x "
                    "with PyCUDA) — see README")


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
            import tensorrt as trt  # optional: only on a Jetson (JetPack)
        except ImportError as exc:
            raise BackendUnavailable(TENSORRT_MISSING) from exc
        try:
            import pycuda.autoinit  # optional, with TensorRT; creates a CUDA context on import
            import pycuda.driver as cuda  # Jetson only, with pycuda.autoinit above
        except ImportError as exc:
            raise BackendUnavailable("tensorrt: PyCUDA is missing (JetPack: pip3 install pycuda); see the "
                                     "module docstring of depth_estimation.runtime.tensorrt_runner") from exc
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
        self._allocate_bindings()

    def _allocate_bindings(self) -> None:
        """Page-locked host and device buffers for the engine's one input and one output."""
        trt, cuda, engine = self._trt, self._cuda, self.engine
        self._host, self._device_mem, self.bindings = [], [], []
        for i in range(engine.num_bindings):
            shape = tuple(engine.get_binding_shape(i))
            host = cuda.pagelocked_empty(int(np.prod(shape)), trt.nptype(engine.get_binding_dtype(i)))
            mem = cuda.mem_alloc(host.nbytes)
            self._host.append((host, shape, engine.binding_is_input(i)))
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
            write_bytes(self.engine_path, data)
        except OSError as exc:
            log.warning("tensorrt: cannot save %s (%s); the engine is rebuilt on every start",
                        self.engine_path, exc)
        log.warning("tensorrt: engine built in %.0f s (%.1f MB)", time.monotonic() - start, len(data) / 1e6)
        return self._runtime.deserialize_cuda_engine(data)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_hw, "TensorRTRunner(%s)" % os.path.basename(self.path))
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
        return as_depth(host_out.reshape(out_shape).astype(np.float32, copy=True))
