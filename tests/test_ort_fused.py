"""The two ONNX export targets: ``onnxruntime`` (opset 17 + ONNX Runtime's transformer fusions) and
``tensorrt`` (opset 11, TensorRT 7.1's operators); their cache keys, the estimator's choice, the CLI."""
import json
import os

import numpy as np
import pytest
import torch

from depth_estimation.runtime import ort_optimize
from depth_estimation.runtime.onnx_export import CHECK_TOLERANCE, TARGET_OPSETS, export_onnx
from depth_estimation.runtime.ort_runner import OrtRunner
from depth_estimation.runtime.torch_runner import TorchRunner
from depth_estimation.tools import export
from depth_fixtures import TINY, scaled_tiny_da2

onnx = pytest.importorskip("onnx")
HW = (70, 98)
LAYERS = TINY["num_layers"]


def _opset(proto):
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _input(hw=HW, seed=5):
    return np.random.default_rng(seed).standard_normal((1, 3) + tuple(hw)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return scaled_tiny_da2()


@pytest.fixture(scope="module")
def targets(model, tmp_path_factory):
    """The same model exported for both targets: target -> (result, path)."""
    folder = tmp_path_factory.mktemp("targets")
    out = {}
    for target in ("onnxruntime", "tensorrt"):
        path = str(folder / ("%s.onnx" % target))
        out[target] = (export_onnx(model, HW[0], HW[1], path, target=target), path)
    return out


def test_onnxruntime_target_fuses_attention_layernorm_and_gelu_and_matches_torch(model, targets):
    result, path = targets["onnxruntime"]
    proto = onnx.load(path)
    ops = ort_optimize.op_counts(proto)
    assert _opset(proto) == TARGET_OPSETS["onnxruntime"] == result["opset"] == 17
    # every layer's attention is one MultiHeadAttention operator: no MatMul/Softmax attention is left
    assert ops.get(ort_optimize.ATTENTION_OP) == ops.get("MultiHeadAttention") == LAYERS
    assert "Softmax" not in ops
    assert ops.get("BiasGelu") == LAYERS and "Erf" not in ops
    # two residual norms per layer, the backbone's output norms: all SkipLayerNormalization
    assert ops.get("SkipLayerNormalization", 0) >= 2 * LAYERS and "LayerNormalization" not in ops
    assert result["fused_ops"] == {op: ops[op] for op in ort_optimize.FUSED_OPS if op in ops}
    assert result["rewrites"]["layer_scale"] == 2 * LAYERS  # attention and MLP layer scale, folded
    assert {n.domain for n in proto.graph.node if n.op_type == "MultiHeadAttention"} == {"com.microsoft"}
    assert result["target"] == "onnxruntime" and result["rel_diff"] < CHECK_TOLERANCE
    assert [i.name for i in proto.graph.input] == ["pixel_values"]
    assert [o.name for o in proto.graph.output] == ["depth"]
    # independently of the export's own check: another input, the torch runner
    x = _input()
    want, got = TorchRunner(model)(x), OrtRunner(path, device="cpu", threads=1)(x)
    assert np.abs(want).max() > 1e-3 and got.shape == want.shape == (1,) + HW
    assert np.abs(got - want).max() / np.abs(want).max() < CHECK_TOLERANCE
    assert sorted(os.listdir(os.path.dirname(path))) == ["onnxruntime.onnx", "tensorrt.onnx"]  # no temp files


def test_tensorrt_target_stays_opset_11_with_tensorrt_71_operators(targets):
    result, path = targets["tensorrt"]
    proto = onnx.load(path)
    assert _opset(proto) == result["opset"] == 11 and result["target"] == "tensorrt"
    assert result["tensorrt_issues"] == [] and result["fused_ops"] == {}
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    # and the fused file is not one TensorRT 7.1 could read: the audit says why
    issues = targets["onnxruntime"][0]["tensorrt_issues"]
    assert any("opset 17" in i for i in issues) and any("MultiHeadAttention" in i for i in issues)


def test_both_targets_compute_the_same_depth(targets):
    x = _input(seed=9)
    fused = OrtRunner(targets["onnxruntime"][1], device="cpu")(x)
    plain = OrtRunner(targets["tensorrt"][1], device="cpu")(x)
    assert np.abs(fused - plain).max() / np.abs(plain).max() < CHECK_TOLERANCE


def test_unknown_target_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="export target 'trt'; use one of tensorrt, onnxruntime"):
        export_onnx(model, HW[0], HW[1], str(tmp_path / "x.onnx"), target="trt")
    assert os.listdir(str(tmp_path)) == []


def test_the_student_exports_for_onnxruntime_unfused(tmp_path):
    """A conv net (no attention) on the onnxruntime target: opset 17, nothing fused, same depth."""
    from depth_estimation.models import fastdepth

    net = fastdepth.random_student()
    result = export_onnx(net, 64, 96, str(tmp_path / "student.onnx"), target="onnxruntime")
    assert result["opset"] == 17 and result["fused_ops"] == {} and result["rel_diff"] < CHECK_TOLERANCE


def _linear_scale_graph(shared_weight: bool):
    """``y = relu((x W + b) * g)`` (g per channel) and, with ``shared_weight``, ``z = x W`` reading
    the same W."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 6).astype(np.float32), "g")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["lin"]),
             helper.make_node("Mul", ["lin", "g"], ["scaled"]), helper.make_node("Relu", ["scaled"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 6])]
    if shared_weight:
        nodes.append(helper.make_node("MatMul", ["x", "W"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 5, 6]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto, x):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("shared_weight", [False, True])
def test_layer_scale_folding_is_exact_and_leaves_shared_weights_alone(shared_weight):
    """The exporter deduplicates equal initializers (random init: all layer scales are ones, all
    biases zeros): folding writes new ones and the other readers keep the old values."""
    proto = _linear_scale_graph(shared_weight)
    x = np.random.default_rng(1).standard_normal((1, 5, 8)).astype(np.float32)
    before = _run(proto, x)
    assert ort_optimize.fold_layer_scale(proto) == 1
    assert ort_optimize.op_counts(proto) == dict({"MatMul": 1 + shared_weight, "Add": 1, "Relu": 1})
    after = _run(proto, x)
    for a, b in zip(after, before):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_noop_reshape_and_residual_copy_rewrites_keep_the_numbers(model, tmp_path):
    from depth_estimation.runtime.onnx_export import _trace_to_onnx
    from depth_estimation.runtime.torch_runner import depth_output

    raw = str(tmp_path / "raw.onnx")  # the onnxruntime target's export before the optimizer
    _trace_to_onnx(depth_output(model), torch.from_numpy(_input(seed=0)), raw, 17, "onnxruntime")
    proto = onnx.load(raw)
    x = np.random.default_rng(2).standard_normal((1, 3) + HW).astype(np.float32)
    import onnxruntime as ort

    before = ort.InferenceSession(raw, providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    norms = ort_optimize.op_counts(proto)["LayerNormalization"]
    ort_optimize.drop_noop_reshapes(proto)
    copies = ort_optimize.split_shared_residuals(proto)
    assert copies == len(TINY["out_indices"]) - 1  # the output norms after layers 1-3 share a residual
    assert ort_optimize.op_counts(proto)["LayerNormalization"] == norms
    after = ort.InferenceSession(proto.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6 * np.abs(before).max())
    # the packed-QKV Attention operator on request (ONNX Runtime's other fused attention)
    packed = str(tmp_path / "packed.onnx")
    dims = ort_optimize.attention_dims(depth_output(model))
    assert dims == {"num_heads": TINY["num_heads"], "hidden_size": TINY["hidden_size"]}
    result = ort_optimize.optimize_for_onnxruntime(raw, packed, attention="Attention", **dims)
    assert result["fused_ops"]["Attention"] == LAYERS and "MultiHeadAttention" not in result["fused_ops"]
    got = ort.InferenceSession(packed, providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    assert np.abs(got - before).max() / np.abs(before).max() < CHECK_TOLERANCE


def test_cache_keys_differ_by_target(tiny_dir, tmp_path, monkeypatch):
    from depth_estimation.models.specs import parse_spec
    from depth_estimation.runtime.estimator import onnx_cache_path, onnx_target

    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    spec = parse_spec(tiny_dir)
    trt = onnx_cache_path(spec, (56, 70), 11, "tensorrt")
    ort = onnx_cache_path(spec, (56, 70), 17, "onnxruntime")
    assert trt != ort and trt == onnx_cache_path(spec, (56, 70), 11)  # tensorrt: the default
    assert onnx_cache_path(spec, (56, 70), 11, "onnxruntime") != trt  # the target alone changes the key
    assert "-56x70-ort-" in os.path.basename(ort) and "-ort-" not in os.path.basename(trt)
    assert (onnx_target("tensorrt"), onnx_target("onnxruntime")) == ("tensorrt", "onnxruntime")


def test_estimator_runs_the_fused_file_on_onnxruntime_and_the_opset_11_one_on_tensorrt(tiny_dir, tmp_path,
                                                                                       monkeypatch):
    from depth_estimation.runtime.estimator import DepthEstimator

    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
    est = DepthEstimator(tiny_dir, input_size=56, backend="onnxruntime", device="cpu").load()
    depth = est.infer(rgb)
    hw = est.input_hw(120, 160)
    fused = onnx.load(est.onnx_path(hw))
    assert ort_optimize.op_counts(fused).get("MultiHeadAttention") == LAYERS and _opset(fused) == 17
    reference = DepthEstimator(tiny_dir, input_size=56, backend="torch", device="cpu").load()
    want = reference.infer(rgb)
    assert reference.input_hw(120, 160) == hw  # a 4:3 frame: its own bucket, no letterbox padding
    assert depth.shape == want.shape == (120, 160)
    assert np.abs(depth - want).max() / np.abs(want).max() < CHECK_TOLERANCE

    trt = DepthEstimator(tiny_dir, input_size=56, backend="tensorrt").load()
    made = []
    monkeypatch.setattr(trt, "_make_runner", lambda path: made.append(path) or OrtRunner(path, device="cpu"))
    trt.infer(rgb)  # TensorRT is not here: ONNX Runtime stands in for it, on the file TensorRT would get
    plain = onnx.load(made[0])
    assert _opset(plain) == 11 and "MultiHeadAttention" not in ort_optimize.op_counts(plain)
    assert made[0] != est.onnx_path(hw) and os.path.dirname(made[0]) == os.path.dirname(est.onnx_path(hw))


def test_export_cli_target_onnxruntime(tiny_dir, tmp_path, capsys):
    out = str(tmp_path / "tiny-ort.onnx")
    assert export.main([tiny_dir, "--input-size", "56", "--target", "onnxruntime", "--out", out]) == 0
    line = capsys.readouterr().out.strip()
    assert "for onnxruntime at 56x70" in line and "opset 17" in line
    assert "%d MultiHeadAttention" % LAYERS in line
    with open(out + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["target"] == "onnxruntime" and sidecar["opset"] == 17
    assert sidecar["fused_ops"]["MultiHeadAttention"] == LAYERS and sidecar["rel_diff"] < CHECK_TOLERANCE
    # without --target: the robot's file (opset 11, nothing fused)
    plain = str(tmp_path / "tiny.onnx")
    assert export.main([tiny_dir, "--input-size", "56", "--out", plain]) == 0
    line = capsys.readouterr().out.strip()
    assert "for tensorrt" in line and "opset 11" in line and "fused: none" in line
    assert "TensorRT 7.1: ok" in line


def test_export_cli_refuses_an_unknown_target(tiny_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        export.main([tiny_dir, "--target", "trt", "--out", str(tmp_path / "x.onnx")])
    assert info.value.code == 2 and "invalid choice: 'trt'" in capsys.readouterr().err


def test_onnxruntime_workers_do_not_spin_unless_asked(targets):
    path = targets["onnxruntime"][1]
    entry = "session.intra_op.allow_spinning"
    assert OrtRunner(path, device="cpu").session.get_session_options().get_session_config_entry(entry) == "0"
    spinning = OrtRunner(path, device="cpu", spinning=True).session.get_session_options()
    assert spinning.get_session_config_entry(entry) == "1"
