"""``<spec>@int8``: ONNX Runtime's dynamic int8 of the exported model (runtime/ort_quant.py)."""
import os

import numpy as np
import pytest

from depth_estimation.io.paths import file_bytes
from depth_estimation.models.specs import SPEC_HELP, parse_spec
from depth_estimation.runtime import ort_quant
from depth_estimation.runtime.runners import ExportError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_spec_parses_and_round_trips():
    spec = parse_spec("random:da2-small@int8")
    assert (spec.kind, spec.arch, spec.base) == ("random", "da2-small", "random:da2-small")
    assert (spec.quant.method, spec.quant.bits, spec.quant.backend) == ("ort", 8, "onnxruntime")
    assert spec.base + spec.quant.suffix == spec.text  # the name a table row shows parses back to it
    assert parse_spec(spec.text) == spec
    assert ort_quant.export_spec(spec) == parse_spec("random:da2-small")
    assert parse_spec("da2-small@hqq4").quant.backend is None  # HQQ runs anywhere
    assert "@int8" in SPEC_HELP


@pytest.mark.parametrize("text, says", [
    ("random:fastdepth-mnv3@int8", "Depth-Anything-V2"),
    ("random:da2-small@int4", "@int8"),
    ("random:da2-small@int8@hqq4", "at most one"),
])
def test_spec_refuses_what_it_cannot_quantize(text, says):
    with pytest.raises(ValueError, match=says):
        parse_spec(text)


@pytest.mark.parametrize("backend", ["torch", "tensorrt"])
def test_other_backends_get_one_clear_error(backend, tiny_dir):
    from depth_estimation.runtime.estimator import DepthEstimator

    with pytest.raises(ValueError) as info:
        DepthEstimator(tiny_dir + "@int8", backend=backend)
    message = str(info.value)
    assert "onnxruntime" in message and backend in message and "\n" not in message


def test_torch_loader_refuses_int8(tiny_dir):
    from depth_estimation.models.loading import load_net

    with pytest.raises(ValueError, match="onnxruntime"):
        load_net(parse_spec(tiny_dir + "@int8"))


def test_weight_type_follows_the_cpu():
    assert ort_quant.weight_type("flags : fpu sse avx2 fma") == "QUInt8"  # no VNNI: u8s8 could saturate
    assert ort_quant.weight_type("flags : fpu avx2 avx512f avx512_vnni") == "QInt8"
    assert ort_quant.weight_type("flags : fpu avx2 avx_vnni") == "QInt8"


def _quantizable_weight_bytes(path):
    """fp32 bytes of the constant weights of MatMul / Attention nodes in an ONNX file."""
    proto = onnx.load(path)
    sizes = {i.name: 4 * int(np.prod(i.dims)) for i in proto.graph.initializer}
    return sum(sizes.get(n.input[1], 0) for n in proto.graph.node if n.op_type in ("MatMul", "Attention"))


def _run_tiny(spec, rgb):
    from depth_estimation.runtime.estimator import DepthEstimator

    est = DepthEstimator(spec, input_size=56, backend="onnxruntime", device="cpu").load()
    depth = est.infer(rgb)
    return depth, est.onnx_path(est.input_hw(*rgb.shape[:2]))


def test_int8_is_smaller_close_to_fp32_and_cached(tiny_dir, cache, monkeypatch):
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    want, fp32_path = _run_tiny(tiny_dir, rgb)
    got, int8_path = _run_tiny(tiny_dir + "@int8", rgb)
    assert int8_path != fp32_path and os.path.dirname(int8_path) == os.path.dirname(fp32_path)
    # bytes actually stored: the quantized weights take 1 byte instead of 4 (+ a scale and zero point
    # per output channel)
    weights = _quantizable_weight_bytes(fp32_path)
    assert weights > 0.3 * file_bytes(fp32_path)
    assert file_bytes(int8_path) < file_bytes(fp32_path) - 0.6 * weights
    # the same fp32 export is quantized, not a second one made for the @int8 spec
    assert sorted(os.listdir(str(cache / "onnx"))) == sorted([os.path.basename(fp32_path),
                                                              os.path.basename(int8_path)])
    ops = {n.op_type for n in onnx.load(int8_path).graph.node}
    assert "MatMulInteger" in ops and "Conv" in ops  # backbone int8, DPT head fp32
    assert 0 < rel_l2(got, want) < 0.05
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99

    def fail(*args, **kwargs):
        raise AssertionError("quantized again")

    monkeypatch.setattr(ort_quant, "quantize_onnx", fail)
    again, path = _run_tiny(tiny_dir + "@int8", rgb)  # a new estimator (a node restart) reuses the file
    assert path == int8_path
    np.testing.assert_array_equal(again, got)


def test_cache_key_follows_the_fp32_file(tmp_path, cache):
    src = str(tmp_path / "model.onnx")
    with open(src, "wb") as f:
        f.write(b"x" * 10)
    first = ort_quant.quantized_path(src, 8, "QUInt8")
    assert os.path.dirname(first) == str(cache / "onnx")
    assert os.path.basename(first).startswith("model-int8-u8-")
    assert ort_quant.quantized_path(src, 8, "QUInt8") == first
    assert ort_quant.quantized_path(src, 8, "QInt8") not in (first,)  # another weight type
    stat = os.stat(src)
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # re-exported (touched)
    assert ort_quant.quantized_path(src, 8, "QUInt8") != first


def _attention_graph(path, hidden=32, heads=2, tokens=10, seed=0):
    """A tiny ONNX-Runtime-optimized-style graph: the Attention contrib operator (packed QKV weight),
    then a MatMul with a constant weight: what the fused onnxruntime export has per layer."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (hidden, 3 * hidden)).astype(np.float32), "qkv_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, (3 * hidden,)).astype(np.float32), "qkv_b"),
             numpy_helper.from_array(rng.normal(0, 0.1, (hidden, hidden)).astype(np.float32), "out_w")]
    nodes = [helper.make_node("Attention", ["x", "qkv_w", "qkv_b"], ["att"], "attention",
                              domain="com.microsoft", num_heads=heads),
             helper.make_node("MatMul", ["att", "out_w"], ["y"], "out_proj")]
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, tokens, hidden]) for name in ("x", "y")]
    graph = helper.make_graph(nodes, "g", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, path)
    return path


def test_quantizes_an_onnxruntime_optimized_graph(tmp_path):
    src = _attention_graph(str(tmp_path / "fused.onnx"))
    result = ort_quant.quantize_onnx(src, str(tmp_path / "int8.onnx"), "QUInt8")
    ops = [n.op_type for n in onnx.load(result["path"]).graph.node]
    assert "QAttention" in ops and "MatMulInteger" in ops and "Attention" not in ops
    assert result["quantized_nodes"] == 2 and result["bytes"] < result["src_bytes"]
    assert 0 < result["rel_diff"] < 0.05
    x = np.random.default_rng(1).normal(0, 1, (1, 10, 32)).astype(np.float32)
    run = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for p in (src, result["path"])]
    assert rel_l2(run[1], run[0]) < 0.05


def test_refuses_a_graph_without_weights_and_a_broken_result(tmp_path, monkeypatch):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    plain = str(tmp_path / "relu.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), plain)
    with pytest.raises(ExportError, match="no MatMul"):
        ort_quant.quantize_onnx(plain, str(tmp_path / "out.onnx"))
    src = _attention_graph(str(tmp_path / "fused.onnx"))
    monkeypatch.setattr(ort_quant, "compare", lambda a, b: 0.5)  # as if int8 had broken the model
    dst = str(tmp_path / "broken.onnx")
    with pytest.raises(ExportError, match="fp32"):
        ort_quant.quantize_onnx(src, dst, "QUInt8")
    assert not os.path.exists(dst)
    assert sorted(os.listdir(str(tmp_path))) == ["fused.onnx", "relu.onnx"]  # no partial files left


def test_quantize_cli_writes_an_int8_file_that_runs_as_an_onnx_spec(tiny_dir, tmp_path, capsys):
    from depth_estimation.runtime.estimator import DepthEstimator
    from depth_estimation.tools import export, quantize

    src, out = str(tmp_path / "tiny.onnx"), str(tmp_path / "tiny-int8.onnx")
    export.export_spec(tiny_dir, src, 56, "80x60")
    assert quantize.main([src, "--int8"]) == 0  # default --out: beside the input
    assert out in capsys.readouterr().out
    assert file_bytes(out) < file_bytes(src)
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    want = DepthEstimator(src, backend="onnxruntime", device="cpu").load().infer(rgb)
    got = DepthEstimator(out, backend="onnxruntime", device="cpu").load().infer(rgb)
    assert 0 < rel_l2(got, want) < 0.05
    assert quantize.main([src, "--int8"]) == 1  # exists: only with --force
    assert "--force" in capsys.readouterr().err
    assert quantize.main([src, "--int8", "--force"]) == 0


@pytest.mark.parametrize("argv, says", [
    (["random:da2-small", "--int8"], ".onnx"),
    (["missing.onnx", "--int8"], "missing.onnx"),
])
def test_quantize_cli_refuses_int8_of_what_is_no_onnx_file(argv, says, capsys):
    from depth_estimation.tools import quantize

    assert quantize.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err


def test_quantize_cli_wants_bits_or_int8(capsys):
    from depth_estimation.tools import quantize

    with pytest.raises(SystemExit):
        quantize.main(["x.onnx", "--bits", "4", "--int8"])
    assert "--bits" in capsys.readouterr().err
