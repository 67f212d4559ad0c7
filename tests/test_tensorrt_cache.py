"""The TensorRT runner and its engine cache, without TensorRT: fake ``tensorrt`` and ``pycuda`` modules
(injected into sys.modules) expose exactly the names NVIDIA documents for TensorRT 7.1, 8.2 and 10
(tables below) and record the calls, so each version's code path runs here and uses only its API.
The fakes behave like the real modules where it matters: ``tensorrt.nptype`` is NVIDIA's 7.x-8.4 one
(it maps BOOL to ``np.bool``, gone in numpy 1.24), device memory holds bytes of the engine's I/O
types (fp16 I/O included), and the objects a build holds (builder, network, parser, serialized
bytes) are tracked so that a test sees what is still alive when an engine is deserialized."""
import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
import types
import weakref

import numpy as np
import pytest

from depth_estimation.runtime import engine_cache, memory, tensorrt_build, tensorrt_runner
from depth_estimation.runtime.engine_cache import DEFAULT_WORKSPACE_MB
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.runtime.tensorrt_runner import TensorRTRunner

from conftest import INCLUDE

HW = (56, 112)
# NVIDIA's TensorRT Python API (docs.nvidia.com/deeplearning/tensorrt/api/python_api), the names
# the runner may touch, per class and version. 8.0 added build_serialized_network, 8.4
# set_memory_pool_limit, 8.5 the tensor-name API; 10 removed build_engine, max_workspace_size and
# the binding API (execute_v2 stays).
BINDINGS = {"num_bindings", "get_binding_shape", "get_binding_dtype", "binding_is_input", "get_binding_name"}
TENSORS = {"num_io_tensors", "get_tensor_name", "get_tensor_shape", "get_tensor_dtype", "get_tensor_mode"}
# INetworkDefinition and ILayer: the layer walk of the fp16 build (7.1+); IHostMemory (serialized
# engines) has the buffer protocol besides these.
LAYERS = {"INetworkDefinition": {"num_layers", "get_layer"},
          "ILayer": {"name", "type", "precision", "num_outputs", "set_output_type", "get_output"},
          "ITensor": {"name", "dtype"},
          "IHostMemory": {"dtype", "nbytes"}}
API = {
    "7.1": {"Builder": {"create_network", "create_builder_config", "platform_has_fast_fp16", "build_engine"},
            "IBuilderConfig": {"max_workspace_size", "set_flag"},
            "ICudaEngine": BINDINGS | {"create_execution_context", "serialize"},
            "IExecutionContext": {"execute_v2", "execute_async_v2"}},
    "8.2": {"Builder": {"create_network", "create_builder_config", "platform_has_fast_fp16", "build_engine",
                        "build_serialized_network"},
            "IBuilderConfig": {"max_workspace_size", "set_flag"},
            "ICudaEngine": BINDINGS | {"create_execution_context", "serialize"},
            "IExecutionContext": {"execute_v2", "execute_async_v2"}},
    "10.0": {"Builder": {"create_network", "create_builder_config", "platform_has_fast_fp16",
                         "build_serialized_network"},
             "IBuilderConfig": {"set_memory_pool_limit", "set_flag"},
             "ICudaEngine": TENSORS | {"create_execution_context", "serialize"},
             "IExecutionContext": {"execute_v2", "set_tensor_address", "execute_async_v3"}},
}
MODULE_NAMES = {"7.1": {"Logger", "Runtime", "Builder", "OnnxParser", "NetworkDefinitionCreationFlag",
                        "BuilderFlag", "nptype", "DataType", "LayerType"},
                "10.0": {"MemoryPoolType", "TensorIOMode"}}
# BuilderFlag members: STRICT_TYPES in 7.1-8.x (deprecated in 8.2, gone in 10), OBEY_PRECISION_CONSTRAINTS
# from 8.2
BUILDER_FLAGS = {"7.1": {"FP16", "STRICT_TYPES"}, "8.2": {"FP16", "STRICT_TYPES", "OBEY_PRECISION_CONSTRAINTS"},
                 "10.0": {"FP16", "OBEY_PRECISION_CONSTRAINTS"}}
DATA_TYPES = ("FLOAT", "HALF", "INT8", "INT32", "BOOL")
LAYER_TYPES = ("CONVOLUTION", "MATRIX_MULTIPLY", "ELEMENTWISE", "REDUCE", "UNARY", "SHUFFLE", "CONSTANT",
               "RESIZE", "ACTIVATION", "SOFTMAX")
ALIVE = weakref.WeakValueDictionary()  # id -> builders, networks, parsers and serialized engines not yet freed


def nvidia_nptype(trt_type):
    """tensorrt.nptype as NVIDIA's Python package defines it in 7.x-8.4 (the mapping built per call)."""
    mapping = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
               "BOOL": np.bool}  # noqa: NPY001 - NVIDIA's code, as shipped
    return mapping[trt_type]


class HostMemory(bytearray):
    """IHostMemory: a serialized engine (buffer protocol, ``dtype``, ``nbytes``); ``bytes()`` of it,
    a copy, is recorded."""

    def __init__(self, data, calls):
        super().__init__(data)
        self._calls = calls
        ALIVE[id(self)] = self

    dtype = property(lambda self: "UINT8")
    nbytes = property(lambda self: len(self))

    def __bytes__(self):
        self._calls.append(("copy of the serialized engine",))
        return bytes(memoryview(self))


class Layer:
    """ILayer of a parsed network: ``name``, ``type``, ``precision`` (settable), outputs."""

    def __init__(self, name, kind, calls, dtype="FLOAT"):
        self.name, self.type, self.num_outputs, self._calls = name, kind, 1, calls
        self._precision, self._output = "FLOAT", types.SimpleNamespace(name=name + ":0", dtype=dtype)

    precision = property(lambda self: self._precision,
                         lambda self, value: (self._calls.append(("precision", self.name, value)),
                                              setattr(self, "_precision", value)))

    def set_output_type(self, index, dtype):
        self._calls.append(("output_type", self.name, index, dtype))

    def get_output(self, index):
        return self._output


# a parsed network's layers (name, type): a convolution, a LayerNorm as torch exports it at opset 11
# (names as the ONNX parser gives them), an unnamed Reduce layer, and a constant and an INT32 shape
# computation in the norm scope: (name, type[, output type])
NETWORK = [("/head/conv1/Conv", "CONVOLUTION"), ("/encoder/layer.0/norm1/ReduceMean", "REDUCE"),
           ("/encoder/layer.0/norm1/Sub", "ELEMENTWISE"), ("/encoder/layer.0/norm1/Pow", "ELEMENTWISE"),
           ("/encoder/layer.0/norm1/ReduceMean_1", "REDUCE"), ("/encoder/layer.0/norm1/Add", "ELEMENTWISE"),
           ("/encoder/layer.0/norm1/Sqrt", "UNARY"), ("/encoder/layer.0/norm1/Div", "ELEMENTWISE"),
           ("/encoder/layer.0/norm1/Constant", "CONSTANT"), ("(Unnamed Layer* 12) [Reduce]", "REDUCE"),
           ("/encoder/layer.0/attention/MatMul", "MATRIX_MULTIPLY"), ("/encoder/layer.0/Add", "ELEMENTWISE"),
           ("/encoder/layer.0/norm1/Sub_shape", "ELEMENTWISE", "INT32")]


def _public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def fake_tensorrt(version, calls):
    """A ``tensorrt`` module with ``version``'s documented names only; engines serialize to JSON."""
    api = API[version]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version + ".0.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.BuilderFlag = types.SimpleNamespace(**{f: f for f in BUILDER_FLAGS[version]})
    trt.DataType = types.SimpleNamespace(**{t: t for t in DATA_TYPES})
    trt.LayerType = types.SimpleNamespace(**{t: t for t in LAYER_TYPES})
    trt.nptype = nvidia_nptype
    trt._io_dtype = "FLOAT"  # the engine's input and output type (HALF: an fp16-I/O engine)
    trt._network = list(NETWORK)
    if version == "10.0":
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            ALIVE[id(self)] = self

        def parse(self, data):
            calls.append(("parse", len(data)))
            return True

    class Config:
        def set_flag(self, flag):
            calls.append(("set_flag", flag))

    if version == "10.0":
        Config.set_memory_pool_limit = lambda self, pool, size: calls.append(("pool_limit", pool, size))
    else:
        Config.max_workspace_size = property(lambda self: 0,
                                             lambda self, size: calls.append(("max_workspace_size", size)))

    def serialize(config_flags):
        time.sleep(trt.build_seconds)
        return HostMemory(json.dumps({"trt": trt.__version__, "fp16": ("set_flag", "FP16") in config_flags,
                                      "io": trt._io_dtype}).encode(), calls)

    class Network:
        def __init__(self):
            self._layers = [Layer(*layer[:2], calls, *layer[2:]) for layer in trt._network]
            ALIVE[id(self)] = self

        num_layers = property(lambda self: len(self._layers))

        def get_layer(self, index):
            return self._layers[index]

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            calls.append(("Builder",))
            ALIVE[id(self)] = self

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

    if "build_engine" in api["Builder"]:
        def build_engine(self, network, config):
            calls.append(("build_engine",))
            payload = bytes(memoryview(serialize(calls)))
            return make_engine(version, calls, trt._io_dtype, payload=payload)
        Builder.build_engine = build_engine
    if "build_serialized_network" in api["Builder"]:
        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return serialize(calls)
        Builder.build_serialized_network = build_serialized_network

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            gc.collect()  # only what is still referenced stays alive
            calls.append(("deserialize", sorted(type(o).__name__ for o in ALIVE.values())))
            try:
                info = json.loads(memoryview(data).tobytes().decode())
            except ValueError:
                return None
            return make_engine(version, calls, info.get("io", "FLOAT")) if info.get("trt") == trt.__version__ \
                else None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    trt.build_seconds = 0.0
    return trt


IO_TYPES = {"FLOAT": np.float32, "HALF": np.float16}


def make_engine(version, calls, io_dtype="FLOAT", payload=b""):
    """An engine for depth = 2 * channel 0 (or ``ENGINE_FUNCTION``), with I/O of type ``io_dtype``."""
    tensors = [("pixel_values", (1, 3) + HW, True), ("depth", (1,) + HW, False)]
    io_type = IO_TYPES[io_dtype]

    def infer(ptrs):  # device memory holds bytes: read and write them as the engine's I/O type
        x = DEVICE[ptrs["pixel_values"]].view(io_type).reshape((1, 3) + HW).astype(np.float32)
        DEVICE[ptrs["depth"]].view(io_type)[:] = ENGINE_FUNCTION["depth"](x).ravel().astype(io_type)

    class Context:
        def execute_v2(self, bindings):
            calls.append(("execute_v2",))
            infer(dict(zip(["pixel_values", "depth"], bindings)))
            return True

    class Engine:
        def create_execution_context(self):
            return Context()

        def serialize(self):  # a new IHostMemory on each call, as TensorRT's
            return HostMemory(payload, calls)

    if version == "10.0":
        addresses = {}
        Context.set_tensor_address = lambda self, name, ptr: addresses.__setitem__(name, ptr)

        def execute_async_v3(self, stream_handle):
            calls.append(("execute_async_v3", stream_handle))
            infer(addresses)
            return True
        Context.execute_async_v3 = execute_async_v3
        Engine.num_io_tensors = len(tensors)
        Engine.get_tensor_name = lambda self, i: tensors[i][0]
        Engine.get_tensor_shape = lambda self, n: dict((t[0], t[1]) for t in tensors)[n]
        Engine.get_tensor_dtype = lambda self, n: io_dtype
        Engine.get_tensor_mode = lambda self, n: "INPUT" if n == "pixel_values" else "OUTPUT"
    else:
        Context.execute_async_v2 = lambda self, bindings, stream_handle: True
        Engine.num_bindings = len(tensors)
        Engine.get_binding_shape = lambda self, i: tensors[i][1]
        Engine.get_binding_dtype = lambda self, i: io_dtype
        Engine.binding_is_input = lambda self, i: tensors[i][2]
        Engine.get_binding_name = lambda self, i: tensors[i][0]
    return Engine()


DEVICE = {}  # fake device memory: pointer -> bytes (uint8)
ENGINE_FUNCTION = {"depth": lambda x: 2 * x[:, 0]}  # what the fake engines compute


def fake_pycuda(calls):
    driver = types.ModuleType("pycuda.driver")

    class Mem:
        def __init__(self, nbytes):
            self.ptr = 0x1000 + len(DEVICE)
            DEVICE[self.ptr] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self.ptr

    driver.pagelocked_empty = lambda n, dtype: np.empty(n, dtype)
    driver.mem_alloc = Mem
    driver.memcpy_htod = lambda mem, host: DEVICE[int(mem)].__setitem__(slice(None), host.view(np.uint8))
    driver.memcpy_dtoh = lambda host, mem: host.view(np.uint8).__setitem__(slice(None), DEVICE[int(mem)])
    driver.memcpy_htod_async = lambda mem, host, stream: driver.memcpy_htod(mem, host)
    driver.memcpy_dtoh_async = lambda host, mem, stream: driver.memcpy_dtoh(host, mem)
    driver.Stream = lambda: types.SimpleNamespace(handle=7, synchronize=lambda: None)
    driver.mem_get_info = lambda: (1536 << 20, 2048 << 20)  # free, total: 512 MiB in use
    autoinit = types.ModuleType("pycuda.autoinit")
    autoinit.context = types.SimpleNamespace(push=lambda: calls.append(("push",)),
                                             pop=lambda: calls.append(("pop",)))
    autoinit.device = types.SimpleNamespace(name=lambda: "NVIDIA Tegra X1", compute_capability=lambda: (5, 3))
    package = types.ModuleType("pycuda")
    package.driver, package.autoinit = driver, autoinit
    return {"pycuda": package, "pycuda.driver": driver, "pycuda.autoinit": autoinit}


@pytest.fixture
def jetson(monkeypatch, tmp_path):
    """Install a fake TensorRT of a version: ``jetson("7.1")`` -> (module, calls)."""
    monkeypatch.setattr(engine_cache, "ROBOT_CONFIG", str(tmp_path / "no-robot"))
    monkeypatch.delenv(engine_cache.ENGINE_DIR_ENV, raising=False)
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))

    monkeypatch.setattr(tensorrt_build, "available_mb", lambda: 4096.0)  # a 4 GB board, nothing running

    def install(version):
        calls = []
        trt = fake_tensorrt(version, calls)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        for name, module in fake_pycuda(calls).items():
            monkeypatch.setitem(sys.modules, name, module)
        return trt, calls
    return install


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx model bytes v1")
    return str(path)


def _names(calls):
    return [c[0] for c in calls]


def _frame_input(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3) + HW).astype(np.float32)


def test_fakes_expose_only_the_documented_api():
    for version, api in API.items():
        calls = []
        trt = fake_tensorrt(version, calls)
        assert _public(trt) - {"build_seconds"} <= MODULE_NAMES["7.1"] | MODULE_NAMES.get(version, set())
        assert _public(trt.Builder(None)) == api["Builder"]
        assert _public(trt.Builder(None).create_builder_config()) == api["IBuilderConfig"]
        engine = make_engine(version, calls)
        assert _public(engine) == api["ICudaEngine"]
        assert _public(engine.create_execution_context()) == api["IExecutionContext"]
        assert _public(trt.BuilderFlag) == BUILDER_FLAGS[version]
        network = trt.Builder(None).create_network(0)
        assert _public(network) == LAYERS["INetworkDefinition"]
        assert _public(network.get_layer(0)) == LAYERS["ILayer"]
        assert _public(network.get_layer(0).get_output(0)) == LAYERS["ITensor"]
        assert _public(engine.serialize()) - _public(bytearray) == LAYERS["IHostMemory"]


@pytest.mark.parametrize("version", sorted(API))
def test_builds_once_then_loads_and_infers(jetson, onnx_file, version, caplog):
    trt, calls = jetson(version)
    caplog.set_level(logging.INFO, logger="depth_estimation")
    runner = TensorRTRunner(onnx_file)
    assert runner.input_hw == HW and runner.gpu == "NVIDIA Tegra X1 sm53"
    folder = str(engine_cache.cache_dir("engines"))
    assert os.path.dirname(runner.engine_path) == folder
    assert os.path.basename(runner.engine_path).startswith("model-fp16-")
    names = _names(calls)
    assert ("set_flag", "FP16") in calls  # fp16 by default
    if version == "10.0":
        assert ("pool_limit", "WORKSPACE", DEFAULT_WORKSPACE_MB << 20) in calls
        assert "build_serialized_network" in names and "build_engine" not in names
    else:
        assert ("max_workspace_size", DEFAULT_WORKSPACE_MB << 20) in calls
        assert ("build_serialized_network" if version == "8.2" else "build_engine") in names
    assert "engine built in" in caplog.text and "takes minutes on a Jetson Nano" in caplog.text
    with open(runner.engine_path + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["key"] == runner.key and sidecar["key"]["tensorrt"] == trt.__version__
    assert sidecar["key"]["gpu"] == runner.gpu and sidecar["key"]["workspace_mb"] == DEFAULT_WORKSPACE_MB

    x = _frame_input()
    np.testing.assert_allclose(runner(x), 2 * x[:, 0])
    assert ("execute_async_v3", 7) in calls if version == "10.0" else ("execute_v2",) in calls

    calls.clear()
    again = TensorRTRunner(onnx_file)
    assert again.engine_path == runner.engine_path
    assert "Builder" not in _names(calls) and "deserialize" in _names(calls)  # loaded, not rebuilt
    np.testing.assert_allclose(again(x), 2 * x[:, 0])
    assert runner.gpu_mem_mb() == 512.0


def test_a_changed_key_rebuilds_into_another_file(jetson, onnx_file, tmp_path):
    trt, calls = jetson("7.1")
    first = TensorRTRunner(onnx_file).engine_path
    variants = [TensorRTRunner(onnx_file, fp16=False), TensorRTRunner(onnx_file, workspace_mb=128)]
    with open(onnx_file, "wb") as f:
        f.write(b"onnx model bytes v2")  # re-exported
    variants.append(TensorRTRunner(onnx_file))
    trt.__version__ = "7.2.0.0"  # another TensorRT (JetPack upgrade)
    variants.append(TensorRTRunner(onnx_file))
    paths = [first] + [v.engine_path for v in variants]
    assert len(set(paths)) == len(paths) and _names(calls).count("Builder") == len(paths)
    assert "-fp32-" in paths[1] and ("set_flag", "FP16") in calls
    assert all(os.path.isfile(p) and os.path.isfile(p + ".json") for p in paths)


@pytest.mark.parametrize("damage", ["no sidecar", "foreign sidecar", "truncated", "other tensorrt"])
def test_a_stale_or_foreign_engine_is_rebuilt_never_loaded(jetson, onnx_file, damage, caplog):
    trt, calls = jetson("8.2")
    path = TensorRTRunner(onnx_file).engine_path
    if damage == "no sidecar":
        os.remove(path + ".json")
    elif damage == "foreign sidecar":
        with open(path + ".json") as f:
            sidecar = json.load(f)
        sidecar["key"]["gpu"] = "Orin sm87"
        with open(path + ".json", "w") as f:
            json.dump(sidecar, f)
    elif damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(5)
    else:  # the bytes and the sidecar agree, but this TensorRT cannot deserialize them
        with open(path, "wb") as f:
            f.write(json.dumps({"trt": "8.0.1.6"}).encode())
        with open(path + ".json") as f:
            sidecar = json.load(f)
        sidecar["engine_sha256"] = engine_cache.file_sha256(path)
        with open(path + ".json", "w") as f:
            json.dump(sidecar, f)
    calls.clear()
    runner = TensorRTRunner(onnx_file, engine_path=path)
    assert _names(calls).count("Builder") == 1, damage
    assert "rebuilding" in caplog.text
    x = _frame_input(1)
    np.testing.assert_allclose(runner(x), 2 * x[:, 0])
    calls.clear()
    TensorRTRunner(onnx_file, engine_path=path)
    assert "Builder" not in _names(calls)  # repaired for the next start


def test_engine_folder_order(monkeypatch, tmp_path):
    monkeypatch.setattr(engine_cache, "ROBOT_CONFIG", str(tmp_path / "data" / "config"))
    robot_dir = str(tmp_path / "data" / "config" / "de" / "engines")
    monkeypatch.setattr(engine_cache, "ROBOT_ENGINE_DIR", robot_dir)
    monkeypatch.delenv(engine_cache.ENGINE_DIR_ENV, raising=False)
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    assert engine_cache.engine_dir() == str(tmp_path / "cache" / "engines")  # not a robot
    (tmp_path / "data" / "config").mkdir(parents=True)
    assert engine_cache.engine_dir() == engine_cache.ROBOT_ENGINE_DIR  # a robot: /data/config
    monkeypatch.setenv(engine_cache.ENGINE_DIR_ENV, str(tmp_path / "env"))
    assert engine_cache.engine_dir() == str(tmp_path / "env")
    assert engine_cache.engine_dir(str(tmp_path / "given")) == str(tmp_path / "given")
    assert engine_cache.ROBOT_ENGINE_DIR.endswith(os.path.join("de", "engines"))
    monkeypatch.undo()
    assert engine_cache.ROBOT_ENGINE_DIR == "/data/config/depth_estimation/engines"


def test_engine_key_fields_and_names():
    key = engine_cache.engine_key("ab" * 32, "7.1.3.4", "NVIDIA Tegra X1 sm53", "fp16", 256)
    path = engine_cache.engine_path("/e", "/x/da2-small-308.onnx", key)
    assert path.startswith("/e/da2-small-308-fp16-") and path.endswith(".engine")
    for field, other in [("onnx_sha256", "cd" * 32), ("tensorrt", "8.2.1.8"), ("gpu", "Orin sm87"),
                         ("precision", "fp32"), ("workspace_mb", 512)]:
        assert engine_cache.key_hash(dict(key, **{field: other})) != engine_cache.key_hash(key), field
    with pytest.raises(ValueError, match="precision"):
        engine_cache.engine_key("ab", "7.1", "gpu", "int8", 256)


def test_unwritable_folder_still_runs_and_says_so(jetson, onnx_file, tmp_path, caplog):
    _trt, calls = jetson("7.1")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    runner = TensorRTRunner(onnx_file, engine_dir=str(blocker / "engines"))
    assert "rebuilt on every start" in caplog.text
    x = _frame_input(2)
    np.testing.assert_allclose(runner(x), 2 * x[:, 0])


def test_progress_lines_while_building(jetson, onnx_file, monkeypatch, caplog):
    trt, _calls = jetson("10.0")
    trt.build_seconds = 0.35
    monkeypatch.setattr(tensorrt_runner, "PROGRESS_SECONDS", 0.1)
    TensorRTRunner(onnx_file)
    assert caplog.text.count("still building model.onnx (fp16") >= 2
    assert not any(t.name == "tensorrt-build-progress" for t in threading.enumerate())


def test_missing_onnx_and_bad_workspace(jetson, tmp_path):
    jetson("7.1")
    with pytest.raises(FileNotFoundError, match="export one on the laptop"):
        TensorRTRunner(str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="workspace"):
        TensorRTRunner(str(tmp_path / "missing.onnx"), workspace_mb=0)


def test_estimator_passes_the_engine_options(jetson, onnx_file, tmp_path):
    _trt, calls = jetson("8.2")
    est = DepthEstimator(onnx_file, backend="tensorrt", engine_dir=str(tmp_path / "engines"),
                         workspace_mb=64, tensorrt_fp16=False).load()
    runner = est.runner_for(HW)
    assert os.path.dirname(runner.engine_path) == str(tmp_path / "engines")
    assert runner.key["workspace_mb"] == 64 and runner.key["precision"] == "fp32"
    assert ("set_flag", "FP16") not in calls and est.input_size == 56 and est.device == "cuda"
    assert est.infer(np.zeros((60, 80, 3), np.uint8)).shape == (60, 80)
    stats = est.memory_stats()
    assert stats["gpu_mem_mb"] == 512.0 and stats["rss_mb"] > 10
    default = DepthEstimator(onnx_file, backend="tensorrt").load().runner_for(HW)
    assert default.key["precision"] == "fp16" and default.key["workspace_mb"] == DEFAULT_WORKSPACE_MB
    with pytest.raises(ValueError, match="workspace_mb"):
        DepthEstimator(onnx_file, backend="tensorrt", workspace_mb=0)


def test_memory_functions():
    rss = memory.rss_mb()
    assert isinstance(rss, float) and 10 < rss < 1e6
    assert memory.gpu_mem_mb() is None  # no CUDA runtime loaded here

    class Broken:
        def gpu_mem_mb(self):
            raise RuntimeError("cuMemGetInfo failed")

    assert memory.gpu_mem_mb(types.SimpleNamespace(_single=Broken(), _runners={})) is None
    stats = memory.memory_stats()
    assert set(stats) == {"rss_mb", "gpu_mem_mb"} and stats["rss_mb"] == round(stats["rss_mb"], 1)


def test_engine_modules_import_without_torch_tensorrt_or_pycuda():
    code = ("import sys\nfor m in ('torch', 'tensorrt', 'pycuda'):\n    sys.modules[m] = None\n"
            "from depth_estimation.runtime import engine_cache, memory, tensorrt_runner\n"
            "print('ok', memory.rss_mb() > 0, memory.gpu_mem_mb())\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=INCLUDE),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok True None", proc.stdout
