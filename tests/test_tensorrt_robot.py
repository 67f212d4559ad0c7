"""What the robot's TensorRT path must survive (issue 17), without a Jetson: numpy against PyCUDA 2021.1's
real dtype registry (its sdist from PyPI) and TensorRT's ``nptype``; the engine build's memory (the
free-memory check, what is still alive when the engine is deserialized, one engine for TensorRT 7);
fp16 engines (normalization layers pinned to fp32, fp16 I/O, the ``tensorrt_fp16`` parameter) and the
start-up self-check against ONNX Runtime. The fake TensorRT and PyCUDA are tests/test_tensorrt_cache.py's
(NVIDIA's documented names only)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from depth_estimation.runtime import jetson_check, tensorrt_build
from depth_estimation.runtime.runners import BackendUnavailable, ExportError
from depth_estimation.runtime.tensorrt_build import NORM_NAME, BuildMemoryError
from depth_estimation.runtime.tensorrt_runner import NUMPY_TYPES, TensorRTRunner, numpy_dtype

from conftest import INCLUDE, ROOT
from test_tensorrt_cache import (ENGINE_FUNCTION, HW, NETWORK, _frame_input, _names, jetson,  # noqa: F401
                                 onnx_file)

PYCUDA = "pycuda==2021.1"  # what dt-machine-learning-base-environment (daffy) installs
PINNED_NUMPY = "numpy==1.23.5"  # the newest numpy the robot's pin allows (cp38 aarch64 wheel exists)
DOWNLOADS = os.path.join(os.path.expanduser("~"), ".cache", "depth_estimation", "test-downloads")
PY38 = os.path.join(ROOT, ".build", "py38-venv", "bin", "python")


def _pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600)


@pytest.fixture(scope="module")
def pycuda_source():
    """PyCUDA 2021.1's source tree (its sdist from PyPI, kept in a cache folder): the pure-Python
    ``pycuda.compyte.dtypes`` that ``import pycuda.autoinit`` runs."""
    import tarfile

    folder = os.path.join(DOWNLOADS, "pycuda-2021.1")
    if not os.path.isdir(os.path.join(folder, "pycuda", "compyte")):
        os.makedirs(DOWNLOADS, exist_ok=True)
        proc = _pip("download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:", PYCUDA,
                    "-d", DOWNLOADS)
        if proc.returncode != 0:
            pytest.skip("cannot download %s from PyPI here: %s" % (PYCUDA, proc.stdout[-300:]))
        with tarfile.open(os.path.join(DOWNLOADS, "pycuda-2021.1.tar.gz")) as tar:
            tar.extractall(DOWNLOADS, members=[m for m in tar.getmembers() if m.name.startswith(
                "pycuda-2021.1/pycuda/") and m.name.endswith(".py")])
    return folder


@pytest.fixture(scope="module")
def pinned_numpy():
    """numpy 1.23.5 in a folder of its own (the shared venv's numpy stays as it is)."""
    folder = os.path.join(DOWNLOADS, "numpy-1.23.5-py%d%d" % sys.version_info[:2])
    if not os.path.isdir(os.path.join(folder, "numpy")):
        proc = _pip("install", "--quiet", "--no-deps", "--only-binary", ":all:", "--target", folder, PINNED_NUMPY)
        if proc.returncode != 0:
            pytest.skip("cannot install %s here: %s" % (PINNED_NUMPY, proc.stdout[-300:]))
    return folder


def _jetson_check(python, *path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(list(path) + [INCLUDE]))
    return subprocess.run([python, "-m", "depth_estimation.runtime.jetson_check"], env=env, timeout=120,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)


# ------------------------------------------------------------------ 1. numpy vs PyCUDA / TensorRT
def test_pycuda_2021_1s_registry_runs_with_the_pinned_numpy_and_fails_from_1_24(pycuda_source, pinned_numpy):
    """The image's build check runs PyCUDA 2021.1's own dtype registry: fine with numpy 1.23.5 (the
    pin's newest), an AttributeError (np.bool) with numpy 1.24 (the Python 3.8 venv) and this venv's."""
    ok = _jetson_check(sys.executable, pinned_numpy, pycuda_source)
    assert ok.returncode == 0 and "numpy 1.23.5 and PyCUDA's dtype registry work together" in ok.stdout, ok.stdout
    import numpy

    here = _jetson_check(sys.executable, pycuda_source)
    assert here.returncode == 1 and "registry fails" in here.stdout and "bool" in here.stdout, here.stdout
    assert ("numpy %s: TensorRT 7.1 and PyCUDA 2021.1 need numpy>=1.19.3,<1.24" % numpy.__version__) in here.stdout
    if os.path.exists(PY38):
        py38 = _jetson_check(PY38, pycuda_source)
        assert py38.returncode == 1 and "numpy 1.24" in py38.stdout and "bool" in py38.stdout, py38.stdout


def test_numpy_range():
    assert jetson_check.numpy_problem("1.23.5") is None and jetson_check.numpy_problem("1.19.3") is None
    for bad in ("1.24.0", "1.24.4", "1.26.4", "2.0.1", "1.19.2"):
        assert "need numpy>=1.19.3,<1.24" in jetson_check.numpy_problem(bad), bad


def test_pycuda_failing_on_numpy_is_one_clear_line(jetson, onnx_file, pycuda_source, tmp_path, monkeypatch):
    """``import pycuda.autoinit`` (here: a PyCUDA whose autoinit runs the real 2021.1 registry, as its
    pycuda.tools does) fails with AttributeError on this numpy: BackendUnavailable naming the pin."""
    import shutil

    jetson("7.1")
    package = tmp_path / "site" / "pycuda"
    shutil.copytree(os.path.join(pycuda_source, "pycuda", "compyte"), str(package / "compyte"))
    (package / "__init__.py").write_text("")
    (package / "autoinit.py").write_text("from pycuda.compyte.dtypes import _fill_dtype_registry\n"
                                         "_fill_dtype_registry(respect_windows=True)\n")
    for name in ("pycuda", "pycuda.autoinit", "pycuda.driver"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(BackendUnavailable, match=r"need numpy < 1\.24 .* numpy>=1\.19\.3,<1\.24"):
        TensorRTRunner(onnx_file)


def test_tensorrt_types_map_without_nptype(jetson):
    """NVIDIA's nptype (7.x-8.4) fails on this numpy; the runner's own mapping covers every type."""
    trt, _calls = jetson("7.1")
    with pytest.raises(AttributeError, match="bool"):
        trt.nptype("FLOAT")
    assert [numpy_dtype(trt, getattr(trt.DataType, name)) for name, _ in NUMPY_TYPES] == \
        [np.float32, np.float16, np.int8, np.int32, np.bool_]
    with pytest.raises(ExportError, match="does not take"):
        numpy_dtype(trt, "FP8")


# ------------------------------------------------------------------ 2. the build's memory
def test_too_little_memory_stops_before_the_build_with_one_line(jetson, onnx_file, monkeypatch):
    _trt, calls = jetson("7.1")
    monkeypatch.setattr(tensorrt_build, "available_mb", lambda: 700.0)
    with pytest.raises(BuildMemoryError) as info:
        TensorRTRunner(onnx_file)
    line = str(info.value)
    assert "\n" not in line and "only 700 MB" in line and "-L build-engine" in line and "252" in line
    assert "Builder" not in _names(calls)
    monkeypatch.setattr(tensorrt_build, "available_mb", lambda: 700.0)
    TensorRTRunner(onnx_file, check_memory=False)  # the one-shot build's --no-memory-check
    need = tensorrt_build.build_memory_mb(100 << 20, 256)
    assert need == tensorrt_build.BUILD_LIBRARIES_MB + 256 + 300


def test_available_memory_is_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        4037916 kB\nMemFree:          123456 kB\nMemAvailable:    1048576 kB\n")
    assert tensorrt_build.available_mb(str(meminfo)) == 1024.0
    assert tensorrt_build.available_mb(str(tmp_path / "none")) is None


@pytest.mark.parametrize("version", ["7.1", "8.2", "10.0"])
def test_the_build_frees_its_copies_and_keeps_one_engine(jetson, onnx_file, version):
    """TensorRT 7 keeps the engine it built (no second one deserialized); 8+ deserializes TensorRT's own
    serialized buffer (no copy) once the builder, network and parser are gone."""
    _trt, calls = jetson(version)
    runner = TensorRTRunner(onnx_file)
    deserialized = [c for c in calls if c[0] == "deserialize"]
    assert ("copy of the serialized engine",) not in calls
    if version == "7.1":
        assert deserialized == []
    else:
        assert deserialized == [("deserialize", ["HostMemory"])]
    x = _frame_input(3)
    np.testing.assert_allclose(runner(x), 2 * x[:, 0])
    with open(runner.engine_path, "rb") as f:
        assert b'"trt"' in f.read()  # the serialized engine was written from TensorRT's buffer


# ------------------------------------------------------------------ 4. fp16
@pytest.mark.parametrize("version", ["7.1", "8.2", "10.0"])
def test_fp16_keeps_the_normalization_layers_in_fp32(jetson, onnx_file, version):
    trt, calls = jetson(version)
    TensorRTRunner(onnx_file)
    pinned = {c[1] for c in calls if c[0] == "precision" and c[2] == "FLOAT"}
    outputs = {c[1] for c in calls if c[0] == "output_type" and c[3] == "FLOAT"}
    expected = {layer[0] for layer in NETWORK if layer[1] in ("REDUCE", "ELEMENTWISE", "UNARY")
                and (layer[1] == "REDUCE" or "norm" in layer[0]) and layer[2:] in ((), ("FLOAT",))}
    assert pinned == outputs == expected and "(Unnamed Layer* 12) [Reduce]" in expected
    assert len(expected) == 8 and "/encoder/layer.0/norm1/Sub_shape" not in expected
    assert ("set_flag", "STRICT_TYPES" if version == "7.1" else "OBEY_PRECISION_CONSTRAINTS") in calls
    calls.clear()
    TensorRTRunner(onnx_file, fp16=False)
    assert not [c for c in calls if c[0] in ("precision", "output_type", "set_flag")]


def test_the_norm_names_cover_every_layernorm_of_a_real_export(tiny_dir, tmp_path):
    """The layer names come from the ONNX nodes: in a Depth-Anything-V2 export (tiny, opset 11) every
    node of a LayerNorm (ReduceMean, Pow, Sqrt...) carries its module's name, with "norm" in it."""
    onnx = pytest.importorskip("onnx")
    from depth_estimation.tools import export

    path = str(tmp_path / "default.onnx")
    export.export_spec(tiny_dir, path, 56, "640x480")  # what the robot image takes
    nodes = onnx.load(path).graph.node
    norm_ops = [n for n in nodes if n.op_type in ("ReduceMean", "Pow", "Sqrt")]
    assert len(norm_ops) >= 4 and all(NORM_NAME.search(n.name) for n in norm_ops), \
        [n.name for n in norm_ops if not NORM_NAME.search(n.name)]
    assert not [n.name for n in nodes if n.op_type in ("Conv", "MatMul") and NORM_NAME.search(n.name)]


def test_fp16_io_engine(jetson, onnx_file):
    """An engine whose input and output are fp16: host buffers of that type, float32 depth out."""
    trt, _calls = jetson("10.0")
    trt._io_dtype = "HALF"
    runner = TensorRTRunner(onnx_file)
    assert runner._buffers["pixel_values"][0].dtype == np.float16
    x = _frame_input(4)
    out = runner(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 2 * x[:, 0], rtol=2e-3, atol=2e-3)
    assert not np.array_equal(out, 2 * x[:, 0])  # it did go through fp16


def test_tensorrt_fp16_parameter_reaches_the_runner():
    import yaml

    from depth_estimation.framepath.pipeline import pipeline_from_params

    with open(os.path.join(ROOT, "packages", "depth_estimation", "config", "depth_node", "default.yaml")) as f:
        params = yaml.safe_load(f)
    assert params["tensorrt_fp16"] is True
    estimator = pipeline_from_params(dict(params, backend="tensorrt", tensorrt_fp16=False)).estimator
    assert estimator.tensorrt_fp16 is False
    assert pipeline_from_params(dict(params, backend="tensorrt")).estimator.tensorrt_fp16 is True


@pytest.fixture
def twice_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    from depth_estimation.runtime.onnx_export import export_onnx

    class Twice(torch.nn.Module):
        def forward(self, x):
            return 2 * x[:, 0]

    path = str(tmp_path / "twice.onnx")
    export_onnx(Twice(), HW[0], HW[1], path, check=False)
    return path


def test_self_check_against_onnx_runtime(jetson, twice_onnx, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    from depth_estimation.runtime.estimator import DepthEstimator

    jetson("8.2")
    est = DepthEstimator(twice_onnx, backend="tensorrt").load()
    blank = np.zeros((48, 64, 3), np.uint8)
    assert est.warm_up(blank).shape == (48, 64)
    assert "matches ONNX Runtime on the warm-up frame" in caplog.text
    runner = est.runner_for(HW)
    x = _frame_input(5)
    assert runner.self_check(x, runner(x)) < 1e-6
    monkeypatch.setitem(ENGINE_FUNCTION, "depth", lambda x: 2 * x[:, 0] + 1.0)  # a wrong engine
    with pytest.raises(ExportError, match="differs from ONNX Runtime"):
        est.warm_up(blank)
    monkeypatch.setitem(ENGINE_FUNCTION, "depth", lambda x: np.full_like(x[:, 0], np.inf))  # fp16 overflow
    with pytest.raises(ExportError, match="non-finite depth"):
        est.warm_up(blank)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the robot's image: no ONNX Runtime
    monkeypatch.setitem(ENGINE_FUNCTION, "depth", lambda x: 2 * x[:, 0] + 1.0)
    assert runner.self_check(x, runner(x)) is None
