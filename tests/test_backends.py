"""depth_estimation.backends and depth_estimation.export: ONNX export at opset 11, the runners."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_estimation.runtime import backends
from depth_estimation.tools import export
from depth_fixtures import tiny_da2

from conftest import INCLUDE

HW = (70, 98)  # 640x480 frames at short side 70


def _scaled_tiny_da2():
    """Tiny DA2 with weights large enough that its output is not ~1e-7 (the init's scale)."""
    model = tiny_da2()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _input(hw=HW, seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3) + tuple(hw)).astype(np.float32)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def model():
    return _scaled_tiny_da2()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return backends.export_onnx(model, HW[0], HW[1], path)


def test_onnx_export_passes_the_checker_at_a_tensorrt_opset_and_matches_torch(exported):
    onnx = pytest.importorskip("onnx")
    path = exported["path"]
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == exported["opset"] == backends.DEFAULT_OPSET <= 13
    assert [i.name for i in proto.graph.input] == ["pixel_values"]
    assert [o.name for o in proto.graph.output] == ["depth"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 70, 98]
    assert exported["input_hw"] == [70, 98] and exported["bytes"] == os.path.getsize(path)
    assert exported["rel_diff"] < 1e-3 and exported["max_abs_diff"] >= 0
    # what TensorRT 7.1 refuses: cubic Resize (position embeddings), align_corners with scales, attention op
    assert exported["tensorrt_issues"] == []
    ops = {n.op_type for n in proto.graph.node}
    assert "Attention" not in ops and "LayerNormalization" not in ops
    assert sorted(os.listdir(os.path.dirname(path))) == ["tiny.onnx"]  # no temp files left


def test_onnxruntime_runner_equals_torch_runner(model, exported):
    ort = backends.OrtRunner(exported["path"], device="cpu", threads=1)
    torch_runner = backends.TorchRunner(model)
    assert (ort.backend, ort.device, ort.input_hw) == ("onnxruntime", "cpu", HW)
    assert (torch_runner.backend, torch_runner.device, torch_runner.input_hw) == ("torch", "cpu", None)
    x = _input(seed=5)
    got, want = ort(x), torch_runner(x)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape == (1,) + HW
    assert np.abs(want).max() > 1e-3  # a real signal, not the init's ~1e-7
    assert _rel(got, want) < 1e-3
    with torch.inference_mode():  # TorchRunner is the model itself
        direct = model(pixel_values=torch.from_numpy(x)).predicted_depth.numpy()
    np.testing.assert_allclose(want, direct, rtol=1e-5, atol=1e-7)


def test_runners_refuse_a_wrong_input_size(model, exported):
    ort = backends.OrtRunner(exported["path"], device="cpu")
    with pytest.raises(ValueError, match=r"input is 70x84 \(HxW\) but the model was exported for 70x98"):
        ort(_input((70, 84)))
    with pytest.raises(ValueError, match="1x3xHxW"):
        ort(_input()[:, :2])
    with pytest.raises(ValueError, match="1x3xHxW"):
        backends.TorchRunner(model)(_input()[0])


def test_torch_runner_half_needs_cuda(model):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA"):
        backends.TorchRunner(model, device="cpu", half=True)
    with pytest.raises(backends.BackendUnavailable, match="CUDA"):
        backends.TorchRunner(model, device="cuda")


def test_depth_output_adapts_transformers_and_plain_models(model):
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x[:, :1] * 2.0  # [1,1,H,W]

    x = torch.from_numpy(_input())
    assert backends.DepthOutput(Plain())(x).shape == (1,) + HW
    wrapped = backends.depth_output(model)
    assert wrapped.transformers and backends.depth_output(wrapped) is wrapped
    with torch.no_grad():
        assert torch.equal(wrapped(x), model(pixel_values=x).predicted_depth)


def test_export_leaves_torch_and_the_model_as_they_were(tmp_path):
    model = _scaled_tiny_da2()
    x = torch.from_numpy(_input())
    with torch.no_grad():
        before = model(pixel_values=x).predicted_depth
    interpolate, sdpa = F.interpolate, F.scaled_dot_product_attention
    backends.export_onnx(model, 42, 56, str(tmp_path / "m.onnx"), check=False)
    assert F.interpolate is interpolate and F.scaled_dot_product_attention is sdpa
    assert not any("interpolate_pos_encoding" in vars(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).predicted_depth, before)


def test_export_reports_what_tensorrt_71_cannot_read_and_rewrites_align_corners(tmp_path):
    class Up(torch.nn.Module):
        def __init__(self, mode, align_corners):
            super().__init__()
            self.mode, self.align_corners = mode, align_corners

        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=self.align_corners)[:, 0]

    cubic = backends.export_onnx(Up("bicubic", False), 8, 8, str(tmp_path / "cubic.onnx"))
    assert any("cubic" in issue for issue in cubic["tensorrt_issues"])
    # scale_factor + align_corners becomes sizes (TensorRT 7.1 reads align_corners only with sizes)
    linear = backends.export_onnx(Up("bilinear", True), 8, 8, str(tmp_path / "linear.onnx"))
    assert linear["tensorrt_issues"] == [] and linear["rel_diff"] < 1e-5
    at13 = backends.export_onnx(Up("bilinear", True), 8, 8, str(tmp_path / "at13.onnx"), opset=13)
    assert at13["tensorrt_issues"] == ["opset 13: TensorRT 7.1 reads opsets <= 11 (TensorRT 8.0/8.2 <= 13)"]


def test_failed_export_leaves_no_file(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        backends.export_onnx(Broken(), 14, 14, str(tmp_path / "broken.onnx"))
    assert os.listdir(str(tmp_path)) == []


def test_tensorrt_runner_is_unavailable_here_and_says_where_it_runs(exported):
    if "tensorrt" in backends.available_backends():
        pytest.skip("TensorRT is installed here")
    with pytest.raises(backends.BackendUnavailable, match="Jetson") as info:
        backends.TensorRTRunner(exported["path"])
    assert "JetPack" in str(info.value) and "TensorRT 7.1" in str(info.value)


def test_available_backends_here():
    found = backends.available_backends()
    assert backends.BACKENDS == ("torch", "onnxruntime", "tensorrt")
    assert "torch" in found and "onnxruntime" in found
    assert set(found) <= set(backends.BACKENDS)


def test_library_imports_without_onnx_onnxruntime_or_tensorrt(tmp_path):
    code = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime", "tensorrt", "pycuda"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from depth_estimation.runtime import backends
from depth_estimation.tools import export
assert backends.available_backends() == ["torch"], backends.available_backends()
try:
    backends.OrtRunner(sys.argv[1])
except backends.BackendUnavailable as exc:
    print("ok", exc)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.onnx")], env=dict(os.environ, PYTHONPATH=INCLUDE),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ok onnxruntime: not installed"), proc.stdout


def test_export_cli_end_to_end_and_refuses_to_overwrite(tiny_dir, tmp_path, capsys):
    # (the CLI on random:da2-small takes 11 s here when idle, 28 s with the CPU shared: a tiny folder stands in)
    out = str(tmp_path / "tiny.onnx")
    assert export.main([tiny_dir, "--input-size", "70", "--frame-size", "640x480", "--out", out]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "at 70x98" in lines[0] and "opset 11" in lines[0] and "TensorRT 7.1: ok" in lines[0]
    with open(out + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["spec"] == tiny_dir and sidecar["input_hw"] == [70, 98] and sidecar["opset"] == 11
    assert sidecar["frame_size"] == [640, 480] and sidecar["rel_diff"] < 1e-3 and sidecar["path"] == out
    assert backends.OrtRunner(out, device="cpu").input_hw == (70, 98)

    before = os.stat(out).st_mtime_ns
    assert export.main([tiny_dir, "--input-size", "56", "--out", out]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert os.stat(out).st_mtime_ns == before
    with pytest.raises(FileExistsError):
        export.export_spec(tiny_dir, out, 56)

    assert export.main([tiny_dir, "--input-size", "56", "--frame-size", "56x56", "--out", out, "--force",
                        "--opset", "12"]) == 0
    assert "at 56x56" in capsys.readouterr().out
    assert backends.OrtRunner(out, device="cpu").input_hw == (56, 56)
    with open(out + ".json") as f:
        assert json.load(f)["opset"] == 12


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    assert export.main(["random:nope", "--out", str(tmp_path / "x.onnx")]) == 1
    assert capsys.readouterr().err.startswith("error: model spec 'random:nope'")
    assert export.main(["random:da2-small", "--frame-size", "640", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "x.onnx"))
