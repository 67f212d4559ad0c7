"""The TensorRT backend (Jetson): :class:`TensorRTRunner` loads a cached engine or builds one from an
exported ONNX file, and runs it. Imports without torch, TensorRT and PyCUDA (they are imported when a
runner is made); needs only numpy besides them.

On the robot (see README, "On the robot"): the arm64v8 image holds an ONNX file exported on the
laptop (opset 11, :mod:`depth_estimation.runtime.onnx_export`) and Duckietown's machine-learning
base gives TensorRT 7.1.3 and PyCUDA for Python 3.8. The first start builds the engine (minutes
on a Nano, fp16 by default; a progress line every 30 s and the build time are logged) into the
engine folder (:func:`.engine_cache.engine_dir`: ``/data/config/depth_estimation/engines`` on a
Duckiebot, which survives the container's ``--rm``); later starts load it in seconds. An engine
is keyed by the ONNX file's SHA-256, the TensorRT version, the GPU, the precision and the builder
workspace (:mod:`.engine_cache`): a stale or foreign engine is rebuilt, never loaded.

Written against NVIDIA's TensorRT Python API: 7.1 (JetPack 4.4/4.5: explicit-batch network,
``OnnxParser``, builder config ``max_workspace_size``, ``build_engine``, bindings and
``execute_v2``), 8.x (``build_serialized_network`` from 8.0, ``set_memory_pool_limit`` from 8.4) and
the tensor-name API of 8.5+/10 (``num_io_tensors``, ``get_tensor_*``, ``set_tensor_address``,
``execute_async_v3``), picked by what the installed module has.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Iterator, List, Optional, Tuple

import numpy as np

from depth_estimation.runtime import engine_cache
from depth_estimation.runtime.engine_cache import DEFAULT_WORKSPACE_MB
from depth_estimation.runtime.runners import BackendUnavailable, ExportError, as_depth, check_input
from depth_estimation.runtime.tensorrt_build import build_engine, check_build_memory

log = logging.getLogger(__name__)

TENSORRT_MISSING = ("tensorrt: not installed here; it runs on a Jetson (JetPack 4.x, TensorRT 7.1/8.x "
                    "with PyCUDA: the arm64v8 image on dt-machine-learning-base-environment) — see README")
PYCUDA_MISSING = ("tensorrt: PyCUDA is missing (it comes with dt-machine-learning-base-environment; "
                  "elsewhere pip3 install pycuda) — see README")
NUMPY_TOO_NEW = ("tensorrt: PyCUDA 2021.1 and TensorRT 7.1 need numpy < 1.24 (they use np.bool), this is "
                 "numpy %s: install numpy>=1.19.3,<1.24 (dependencies-py3.arm64v8.txt) — see README")
PROGRESS_SECONDS = 30.0
# TensorRT's data types as numpy ones, by the names of tensorrt.DataType (7.1+). Not tensorrt.nptype:
# in TensorRT 7.x-8.4 it maps BOOL to np.bool, which numpy 1.24 removed, so every call fails there.
NUMPY_TYPES = (("FLOAT", np.float32), ("HALF", np.float16), ("INT8", np.int8), ("INT32", np.int32),
               ("BOOL", np.bool_))
# the self-check: largest difference from ONNX Runtime on the warm-up frame, as a fraction of the
# largest output, per precision
SELF_CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 0.05}
IoTensor = Tuple[str, Tuple[int, ...], type, bool]  # name, shape, numpy dtype, is input


def _import_tensorrt():
    """(tensorrt, pycuda.driver, pycuda.autoinit), or BackendUnavailable naming what is missing."""
    try:
        import tensorrt as trt  # optional: only on a Jetson (JetPack) or with NVIDIA's wheels
    except ImportError as exc:
        raise BackendUnavailable(TENSORRT_MISSING) from exc
    try:
        import pycuda.autoinit as autoinit  # optional, with TensorRT; creates a CUDA context on import
        import pycuda.driver as cuda  # optional, with pycuda.autoinit above
    except ImportError as exc:
        raise BackendUnavailable(PYCUDA_MISSING) from exc
    except AttributeError as exc:  # PyCUDA 2021.1's dtype registry on numpy >= 1.24: np.bool
        raise BackendUnavailable(NUMPY_TOO_NEW % np.__version__) from exc
    return trt, cuda, autoinit


def numpy_dtype(trt, dtype) -> type:
    """The numpy type of a ``tensorrt.DataType`` (without ``tensorrt.nptype``, see :data:`NUMPY_TYPES`)."""
    for name, np_type in NUMPY_TYPES:
        if getattr(trt.DataType, name, None) == dtype:
            return np_type
    raise ExportError("tensorrt: an engine input or output of type %s, which this runner does not take"
                      % dtype)


def gpu_name(autoinit) -> str:
    """The CUDA device's name and compute capability, e.g. ``NVIDIA Tegra X1 sm53``."""
    device = autoinit.device
    major, minor = device.compute_capability()
    return "%s sm%d%d" % (device.name(), major, minor)


@contextlib.contextmanager
def _progress(what: str, every: Optional[float] = None) -> Iterator[None]:
    """A log line every ``every`` seconds (:data:`PROGRESS_SECONDS`) while the block runs (the builder
    says nothing for minutes)."""
    every = PROGRESS_SECONDS if every is None else every
    done, start = threading.Event(), time.monotonic()

    def beat():
        while not done.wait(every):
            log.warning("tensorrt: still building %s (%.0f s so far)", what, time.monotonic() - start)

    thread = threading.Thread(target=beat, name="tensorrt-build-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _io_tensors(trt, engine) -> List[IoTensor]:
    """The engine's inputs and outputs, in binding order (TensorRT 7.1-8.x) or I/O tensor order (8.5+)."""
    if hasattr(engine, "num_io_tensors"):  # TensorRT >= 8.5, the only API in 10
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return [(n, tuple(engine.get_tensor_shape(n)), numpy_dtype(trt, engine.get_tensor_dtype(n)),
                 engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT) for n in names]
    return [(engine.get_binding_name(i), tuple(engine.get_binding_shape(i)),
             numpy_dtype(trt, engine.get_binding_dtype(i)), bool(engine.binding_is_input(i)))
            for i in range(engine.num_bindings)]


class TensorRTRunner:
    """A TensorRT engine for one exported ONNX file (fixed input size), cached across restarts.

    ``fp16`` (default) builds a half-precision engine (the Jetson's fast path; normalization layers
    stay fp32); ``workspace_mb`` bounds the builder's scratch memory; ``engine_dir`` is the cache
    folder (:func:`.engine_cache.engine_dir`); ``engine_path`` forces one file (still checked by its
    key); ``check_memory`` stops a build the free memory cannot hold (:func:`.check_build_memory`).
    """

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, onnx_path: str, fp16: bool = True, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 engine_path: Optional[str] = None, engine_dir: Optional[str] = None,
                 check_memory: bool = True):
        trt, cuda, autoinit = _import_tensorrt()
        if int(workspace_mb) <= 0:
            raise ValueError("tensorrt: workspace_mb %r must be positive" % workspace_mb)
        if not os.path.isfile(onnx_path):
            raise FileNotFoundError("tensorrt: no ONNX file %s (export one on the laptop with "
                                    "python3 -m depth_estimation.export)" % onnx_path)
        self._trt, self._cuda = trt, cuda
        self._cuda_context = autoinit.context  # pushed around every call: ROS calls from other threads
        self.path, self.fp16, self.workspace_mb = onnx_path, bool(fp16), int(workspace_mb)
        self.check_memory = bool(check_memory)
        self.gpu = gpu_name(autoinit)
        self.key = engine_cache.engine_key(engine_cache.file_sha256(onnx_path), trt.__version__, self.gpu,
                                           "fp16" if self.fp16 else "fp32", self.workspace_mb)
        self.engine_path = engine_path or engine_cache.engine_path(engine_cache.engine_dir(engine_dir),
                                                                   onnx_path, self.key)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with self._pushed():
            self._runtime = trt.Runtime(self._logger)  # must outlive the engine
            self.engine = self._load_engine() or self._build_engine()
            self.context = self.engine.create_execution_context()
            self._allocate()

    @contextlib.contextmanager
    def _pushed(self) -> Iterator[None]:
        self._cuda_context.push()
        try:
            yield
        finally:
            self._cuda_context.pop()

    def _deserialize(self, data: bytes):
        try:
            return self._runtime.deserialize_cuda_engine(data)
        except Exception as exc:  # noqa: BLE001 - TensorRT raises various types for a foreign engine
            log.warning("tensorrt: cannot deserialize %s (%s)", self.engine_path, exc)
            return None

    def _load_engine(self):
        data = engine_cache.cached_engine(self.engine_path, self.key)
        if data is None:
            return None
        engine = self._deserialize(data)
        if engine is None:
            log.warning("tensorrt: %s does not load here; rebuilding it", self.engine_path)
        else:
            log.info("tensorrt: loaded the engine %s", self.engine_path)
        return engine

    def _build_engine(self):
        what = "%s (%s, workspace %d MB, %s)" % (os.path.basename(self.path), self.key["precision"],
                                                 self.workspace_mb, self.gpu)
        if self.check_memory:
            check_build_memory(self.path, self.workspace_mb)  # BuildMemoryError: one line, what to do
        log.warning("tensorrt: building the engine for %s once; this takes minutes on a Jetson Nano, "
                    "later starts load %s", what, self.engine_path)
        start = time.monotonic()

        def store(data: memoryview) -> None:
            seconds = time.monotonic() - start
            log.warning("tensorrt: engine built in %.0f s (%.1f MB)", seconds, len(data) / 1e6)
            engine_cache.store_engine(self.engine_path, self.key, data, seconds, self.path)

        with _progress(what):
            return build_engine(self._trt, self._runtime, self._logger, self.path, self.fp16,
                                self.workspace_mb, store)

    def _allocate(self) -> None:
        """Page-locked host and device buffers for the engine's one input and one output."""
        cuda, tensors = self._cuda, _io_tensors(self._trt, self.engine)
        ins = [t for t in tensors if t[3]]
        outs = [t for t in tensors if not t[3]]
        if len(ins) != 1 or len(outs) != 1:
            raise ExportError("tensorrt: expected one input and one output, got %d and %d"
                              % (len(ins), len(outs)))
        self._buffers = {}
        self.bindings = []
        for name, shape, dtype, _is_input in tensors:
            host = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            mem = cuda.mem_alloc(host.nbytes)
            self._buffers[name] = (host, shape, mem)
            self.bindings.append(int(mem))
        self._in, self._out = ins[0][0], outs[0][0]
        self.input_hw = tuple(int(d) for d in ins[0][1][2:])
        self._v3 = hasattr(self.context, "execute_async_v3") and hasattr(self.context, "set_tensor_address")
        if self._v3:  # TensorRT >= 8.5: addresses by tensor name, enqueued on a stream
            for name, (_host, _shape, mem) in self._buffers.items():
                self.context.set_tensor_address(name, int(mem))
            self._stream = cuda.Stream()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_hw, "TensorRTRunner(%s)" % os.path.basename(self.path))
        cuda = self._cuda
        host_in, _, mem_in = self._buffers[self._in]
        host_out, out_shape, mem_out = self._buffers[self._out]
        np.copyto(host_in, x.ravel().astype(host_in.dtype, copy=False))
        with self._pushed():
            if self._v3:
                cuda.memcpy_htod_async(mem_in, host_in, self._stream)
                ok = self.context.execute_async_v3(self._stream.handle)
                cuda.memcpy_dtoh_async(host_out, mem_out, self._stream)
                self._stream.synchronize()
            else:  # TensorRT 7.1 - 8.x
                cuda.memcpy_htod(mem_in, host_in)
                ok = self.context.execute_v2(bindings=self.bindings)
                cuda.memcpy_dtoh(host_out, mem_out)
        if not ok:
            raise RuntimeError("tensorrt: inference failed (execute returned false; see the TensorRT log)")
        return as_depth(host_out.reshape(out_shape).astype(np.float32, copy=True))

    def self_check(self, x: np.ndarray, depth: np.ndarray) -> Optional[float]:
        """Check the engine's output ``depth`` for input ``x`` (the warm-up frame): ExportError when it
        is not finite (an fp16 overflow) or, where ONNX Runtime is installed, differs from ONNX
        Runtime's on the same ONNX file by more than :data:`SELF_CHECK_TOLERANCE`; that difference
        (a fraction of the largest output), or None when there is no ONNX Runtime to compare with."""
        precision = self.key["precision"]
        if not np.all(np.isfinite(depth)):
            raise ExportError("tensorrt: the %s engine of %s gives non-finite depth on the warm-up frame "
                              "(an fp16 overflow?); set tensorrt_fp16: false" % (precision, self.path))
        from depth_estimation.runtime.ort_runner import OrtRunner  # same layer; onnxruntime is optional
        try:
            reference = OrtRunner(self.path, device="cpu")(x)
        except BackendUnavailable:
            log.info("tensorrt: no ONNX Runtime here: the engine is not compared with it")
            return None
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors: no comparison, said once
            log.warning("tensorrt: ONNX Runtime cannot run %s (%s): the engine is not compared with it",
                        self.path, exc)
            return None
        diff = float(np.max(np.abs(depth - reference)) / max(float(np.max(np.abs(reference))), 1e-6))
        if diff > SELF_CHECK_TOLERANCE[precision]:
            raise ExportError("tensorrt: the %s engine of %s differs from ONNX Runtime by %.3g of the "
                              "output's range on the warm-up frame (over %g); set tensorrt_fp16: false or "
                              "export again" % (precision, self.path, diff, SELF_CHECK_TOLERANCE[precision]))
        log.warning("tensorrt: the %s engine matches ONNX Runtime on the warm-up frame (largest difference "
                    "%.2g of the output)", precision, diff)
        return diff

    def gpu_mem_mb(self) -> Optional[float]:
        """Device memory in use on this runner's GPU (all processes; on a Jetson, the shared RAM)."""
        with self._pushed():
            free, total = self._cuda.mem_get_info()
        return (total - free) / float(1 << 20)
