"""depth_estimation.runtime (runners, onnx_export) and depth_estimation.export: ONNX export at opset 11,
the runners."""
import importlib.util
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_estimation.runtime.onnx_export import DEFAULT_OPSET, export_onnx
from depth_estimation.runtime.ort_runner import OrtRunner
from depth_estimation.runtime.runners import BackendUnavailable
from depth_estimation.runtime.tensorrt_runner import TensorRTRunner
from depth_estimation.runtime.torch_runner import DepthOutput, TorchRunner, depth_output
from depth_estimation.tools import export
from depth_fixtures import scaled_tiny_da2

from conftest import INCLUDE

HW = (70, 98)  # 640x480 frames at short side 70


def _input(hw=HW, seed=0):
    return np.random.default_rng(seed).standard_normal((1, 3) + tuple(hw)).astype(np.float32)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _python(code, arg):
    """``python -c code arg`` with this checkout's library, in a fresh process."""
    return subprocess.run([sys.executable, "-c", code, arg], env=dict(os.environ, PYTHONPATH=INCLUDE),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=120)


@pytest.fixture(scope="module")
def model():
    return scaled_tiny_da2()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return export_onnx(model, HW[0], HW[1], path)


def test_onnx_export_passes_the_checker_at_a_tensorrt_opset_and_matches_torch(exported):
    onnx = pytest.importorskip("onnx")
    path = exported["path"]
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == exported["opset"] == DEFAULT_OPSET <= 13
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
    ort = OrtRunner(exported["path"], device="cpu", threads=1)
    torch_runner = TorchRunner(model)
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
    ort = OrtRunner(exported["path"], device="cpu")
    with pytest.raises(ValueError, match=r"input is 70x84 \(HxW\) but the model was exported for 70x98"):
        ort(_input((70, 84)))
    with pytest.raises(ValueError, match="1x3xHxW"):
        ort(_input()[:, :2])
    with pytest.raises(ValueError, match="1x3xHxW"):
        TorchRunner(model)(_input()[0])


def test_torch_runner_half_needs_cuda(model):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA"):
        TorchRunner(model, device="cpu", half=True)
    with pytest.raises(BackendUnavailable, match="CUDA"):
        TorchRunner(model, device="cuda")


def test_depth_output_adapts_transformers_and_plain_models(model):
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x[:, :1] * 2.0  # [1,1,H,W]

    x = torch.from_numpy(_input())
    assert DepthOutput(Plain())(x).shape == (1,) + HW
    wrapped = depth_output(model)
    assert wrapped.transformers and depth_output(wrapped) is wrapped
    with torch.no_grad():
        assert torch.equal(wrapped(x), model(pixel_values=x).predicted_depth)


def test_export_leaves_torch_and_the_model_as_they_were(tmp_path):
    model = scaled_tiny_da2()
    x = torch.from_numpy(_input())
    with torch.no_grad():
        before = model(pixel_values=x).predicted_depth
    interpolate, sdpa = F.interpolate, F.scaled_dot_product_attention
    export_onnx(model, 42, 56, str(tmp_path / "m.onnx"), check=False)
    assert F.interpolate is interpolate and F.scaled_dot_product_attention is sdpa
    assert not any("interpolate_pos_encoding" in vars(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).predicted_depth, before)


def test_export_rewrites_calls_on_its_own_thread_only(tmp_path):
    """The rewrites (here attention -> MatMul/Softmax, which has no dropout) are a torch function mode
    of the exporting thread: torch.nn.functional keeps its functions, other threads get the real ones."""
    q = torch.randn(1, 2, 5, 8, generator=torch.Generator().manual_seed(0))
    reference = F.scaled_dot_product_attention(q, q, q)
    interpolate, sdpa = F.interpolate, F.scaled_dot_product_attention
    seen = {"functional": [], "export thread": [], "other thread": []}

    def dropped_out():  # the real attention drops 90% here; the rewritten one drops nothing
        attention = F.scaled_dot_product_attention(q, q, q, dropout_p=0.9)
        return not torch.allclose(attention, reference, atol=1e-5)

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["functional"].append(F.scaled_dot_product_attention is sdpa and F.interpolate is interpolate)
            seen["export thread"].append(dropped_out())
            other = threading.Thread(target=lambda: seen["other thread"].append(dropped_out()))
            other.start()
            other.join()
            return x[:, 0] * 2.0

    export_onnx(Probe(), 14, 14, str(tmp_path / "probe.onnx"), check=False)
    assert seen["functional"] and all(seen["functional"])
    assert seen["export thread"] and not any(seen["export thread"])
    assert len(seen["other thread"]) == len(seen["export thread"]) and all(seen["other thread"])
    assert F.interpolate is interpolate and F.scaled_dot_product_attention is sdpa
    assert dropped_out()  # and after the export, this thread's calls are the real ones again


def test_export_reports_what_tensorrt_71_cannot_read_and_rewrites_align_corners(tmp_path):
    class Up(torch.nn.Module):
        def __init__(self, mode, align_corners):
            super().__init__()
            self.mode, self.align_corners = mode, align_corners

        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode=self.mode, align_corners=self.align_corners)[:, 0]

    cubic = export_onnx(Up("bicubic", False), 8, 8, str(tmp_path / "cubic.onnx"))
    assert any("cubic" in issue for issue in cubic["tensorrt_issues"])
    # scale_factor + align_corners becomes sizes (TensorRT 7.1 reads align_corners only with sizes)
    linear = export_onnx(Up("bilinear", True), 8, 8, str(tmp_path / "linear.onnx"))
    assert linear["tensorrt_issues"] == [] and linear["rel_diff"] < 1e-5
    # onnx-tensorrt 7.1 computes asymmetric coordinates (torch's nearest, linear without
    # align_corners in older exporters) as align_corners: other values
    nearest = export_onnx(Up("nearest", None), 8, 8, str(tmp_path / "nearest.onnx"))
    assert [i for i in nearest["tensorrt_issues"] if "asymmetric coordinates" in i], nearest["tensorrt_issues"]
    at13 = export_onnx(Up("bilinear", True), 8, 8, str(tmp_path / "at13.onnx"), opset=13)
    assert at13["tensorrt_issues"] == ["opset 13: TensorRT 7.1 reads opsets <= 11 (TensorRT 8.0/8.2 <= 13)"]


def test_failed_export_leaves_no_file(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        export_onnx(Broken(), 14, 14, str(tmp_path / "broken.onnx"))
    assert os.listdir(str(tmp_path)) == []


def test_tensorrt_runner_is_unavailable_here_and_says_where_it_runs(exported):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendUnavailable, match="Jetson") as info:
        TensorRTRunner(exported["path"])
    assert "JetPack" in str(info.value) and "TensorRT 7.1" in str(info.value)


def test_library_imports_without_onnx_onnxruntime_or_tensorrt(tmp_path):
    code = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("onnx", "onnxruntime", "tensorrt", "pycuda"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from depth_estimation.runtime import runners
from depth_estimation.runtime.ort_runner import OrtRunner
from depth_estimation.tools import export
try:
    OrtRunner(sys.argv[1])
except runners.BackendUnavailable as exc:
    print("ok", exc)
"""
    proc = _python(code, str(tmp_path / "m.onnx"))
    assert proc.returncode == 0 and proc.stdout.startswith("ok onnxruntime: not installed"), proc.stdout


def test_onnx_runners_import_and_run_without_torch(exported):
    code = r"""
import sys
sys.modules["torch"] = None  # any import of torch fails
import numpy as np
from depth_estimation.runtime import ort_runner, runners, tensorrt_runner
out = ort_runner.OrtRunner(sys.argv[1], device="cpu")(np.zeros((1, 3, 70, 98), np.float32))
print("ok", out.shape, out.dtype, sys.modules["torch"])
"""
    proc = _python(code, exported["path"])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok (1, 70, 98) float32 None", proc.stdout


def test_export_cli_end_to_end_and_refuses_to_overwrite(tiny_dir, tmp_path, capsys):
    # (the CLI on random:da2-small takes 11 s here when idle, 28 s with the CPU shared: a tiny folder
    # stands in)
    out = str(tmp_path / "tiny.onnx")
    assert export.main([tiny_dir, "--input-size", "70", "--frame-size", "640x480", "--out", out]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "at 70x98" in lines[0] and "opset 11" in lines[0]
    assert "TensorRT 7.1: ok" in lines[0]
    with open(out + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["spec"] == tiny_dir and sidecar["input_hw"] == [70, 98] and sidecar["opset"] == 11
    assert sidecar["frame_size"] == [640, 480] and sidecar["rel_diff"] < 1e-3 and sidecar["path"] == out
    assert OrtRunner(out, device="cpu").input_hw == (70, 98)

    before = os.stat(out).st_mtime_ns
    assert export.main([tiny_dir, "--input-size", "56", "--out", out]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert os.stat(out).st_mtime_ns == before
    with pytest.raises(FileExistsError):
        export.export_spec(tiny_dir, out, 56)

    assert export.main([tiny_dir, "--input-size", "56", "--frame-size", "56x56", "--out", out, "--force",
                        "--opset", "12"]) == 0
    assert "at 56x56" in capsys.readouterr().out
    assert OrtRunner(out, device="cpu").input_hw == (56, 56)
    with open(out + ".json") as f:
        assert json.load(f)["opset"] == 12


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    assert export.main(["random:nope", "--out", str(tmp_path / "x.onnx")]) == 1
    assert capsys.readouterr().err.startswith("error: model spec 'random:nope'")
    assert export.main(["random:da2-small", "--frame-size", "640", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "x.onnx"))


class _Channel0(torch.nn.Module):
    """A synthetic depth model: its output is its input's channel 0 (normalized red)."""

    def forward(self, x):
        return x[:, 0]


@pytest.fixture(scope="module")
def channel0_onnx(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ch0") / "channel0-56x112.onnx")
    export_onnx(_Channel0(), 56, 112, path)
    return path


def test_onnx_spec_keeps_the_frames_aspect_ratio(channel0_onnx, monkeypatch):
    """A square frame in a 56x112 ONNX file is letterboxed (56x56 content, padding left and right),
    not squeezed to 56x112, and its output comes back undistorted at the frame's size."""
    from depth_estimation.runtime import preprocess
    from depth_estimation.runtime.estimator import DepthEstimator

    seen = []
    call = OrtRunner.__call__
    monkeypatch.setattr(OrtRunner, "__call__", lambda self, x: seen.append(x) or call(self, x))
    est = DepthEstimator(channel0_onnx, backend="onnxruntime", device="cpu").load()
    assert est.input_hw(100, 100) == (56, 112) and est.input_size == 56
    rgb = np.zeros((100, 100, 3), np.uint8)
    rgb[:, 30:] = 255  # a vertical edge at 30 % of the width
    depth = est.infer(rgb)
    content = np.abs(seen[-1][0, 0]) > 0  # the padding is the ImageNet mean: 0 once normalized
    columns = np.flatnonzero(content.any(axis=0))
    assert len(columns) == 56 and columns[0] == 28, columns  # 56x56: the square stays square
    assert depth.shape == (100, 100)
    want = preprocess.normalize(rgb, 100, 100)[0, 0]
    assert np.abs(depth[:, :27] - want[:, :27]).max() < 1e-4  # no padding leaks into the frame
    assert np.abs(depth[:, 33:] - want[:, 33:]).max() < 1e-4
    edge = np.argmax(np.diff(depth[50]))
    assert 28 <= edge <= 31, edge  # the edge stays at 30 % of the width


def test_runners_are_bounded_whatever_the_frame_sizes(tiny_dir, monkeypatch):
    """10 frame sizes (DA-2K, labelling) leave at most max_runners sessions alive, and share exports."""
    import gc
    import weakref

    from depth_estimation.runtime.estimator import DepthEstimator

    class FakeRunner:
        backend, device = "onnxruntime", "cpu"

        def __init__(self, path):
            self.input_hw = tuple(int(v) for v in path.split("x"))

        def __call__(self, x):
            assert x.shape[2:] == self.input_hw
            return np.zeros((1,) + self.input_hw, np.float32)

    exports, made = [], []  # made: weak references only, the estimator holds the runners

    def make_runner(path):
        runner = FakeRunner(path)
        made.append(weakref.ref(runner))
        return runner

    est = DepthEstimator(tiny_dir, input_size=56, backend="onnxruntime", max_runners=3).load()
    monkeypatch.setattr(est, "_onnx_for", lambda hw: exports.append(hw) or "%dx%d" % hw)
    monkeypatch.setattr(est, "_make_runner", make_runner)
    sizes = [(100, 100), (100, 130), (100, 160), (100, 190), (100, 250), (100, 310), (130, 100),
             (200, 100), (300, 100), (100, 390)]
    for h, w in sizes:
        assert est.infer(np.zeros((h, w, 3), np.uint8)).shape == (h, w)
        gc.collect()
        assert sum(r() is not None for r in made) <= 3
    assert len(made) > 3  # the bound bit
    assert len(set(exports)) == len(exports)  # one export per input shape
    assert est.infer(np.zeros((200, 260, 3), np.uint8)).shape == (200, 260)  # 100x130's bucket
    assert exports[-1] == est.input_hw(100, 130)
    with pytest.raises(ValueError, match="max_runners"):
        DepthEstimator(tiny_dir, max_runners=0)


def test_onnx_cache_key_follows_content_and_settings(tiny_dir, tmp_path, monkeypatch):
    import shutil

    from depth_estimation.models.specs import parse_spec, safe_name
    from depth_estimation.runtime.estimator import onnx_cache_path

    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    for sub in ("a", "b"):
        shutil.copytree(tiny_dir, str(tmp_path / sub / "model"))
    a, b = parse_spec(str(tmp_path / "a" / "model")), parse_spec(str(tmp_path / "b" / "model"))
    path = onnx_cache_path(a, (56, 70), 11)
    assert os.path.basename(path).startswith(safe_name(a.text) + "-56x70-") and path.endswith(".onnx")
    assert os.path.dirname(path) == str(tmp_path / "cache" / "onnx")
    assert path == onnx_cache_path(a, (56, 70), 11)
    assert path != onnx_cache_path(b, (56, 70), 11)  # same basename, another folder
    assert path != onnx_cache_path(a, (56, 70), 12)  # the opset
    assert path != onnx_cache_path(a, (56, 84), 11)
    weights = str(tmp_path / "a" / "model" / "model.safetensors")
    stat = os.stat(weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # touched / rewritten
    assert path != onnx_cache_path(a, (56, 70), 11)
    random = onnx_cache_path(parse_spec("random:da2-small"), (56, 70), 11)
    assert os.path.basename(random).startswith("random_da2-small-56x70-")


def test_onnx_spec_runs_without_torch(exported):
    """The ONNX Runtime and TensorRT paths of the estimator never import torch (the Jetson image)."""
    code = r"""
import sys
sys.modules["torch"] = None  # any import of torch fails
import numpy as np
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.runtime.runners import BackendUnavailable
est = DepthEstimator(sys.argv[1], backend="onnxruntime", device="cpu", threads=1).load()
out = est.infer(np.zeros((60, 80, 3), np.uint8))
try:
    DepthEstimator(sys.argv[1], backend="tensorrt").load()
except BackendUnavailable as exc:
    pass
print("ok", out.shape, out.dtype, est.device, est.input_size)
"""
    proc = _python(code, exported["path"])
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok (60, 80) float32 cpu 70"), proc.stdout


# the modules the robot's (arm64v8) image does not have: any import of them fails in the checks below
NOT_ON_THE_ROBOT = ("torch", "torchvision", "transformers", "huggingface_hub", "safetensors", "tokenizers",
                    "hqq", "onnx", "tensorrt", "pycuda")
ROBOT_PATH = r"""
import sys, yaml
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in sys.argv[3].split(","):
            raise ImportError("not on the robot: " + name)
sys.meta_path.insert(0, Block())
for name in list(sys.modules):
    if name.split(".")[0] in sys.argv[3].split(","):
        del sys.modules[name]
import cv2
import numpy as np
from depth_estimation.framepath.pipeline import pipeline_from_params
with open(sys.argv[2]) as f:
    raw = yaml.safe_load(f)
raw.update(model=sys.argv[1], backend="onnxruntime", device="cpu", threads=1)  # stands in for tensorrt
pipeline = pipeline_from_params(raw)
pipeline.estimator.load()
frame = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8))[1].tobytes()
result = pipeline.process(frame, "jpeg")
stats = pipeline.estimator.memory_stats()
print("ok", result.depth.shape, result.colorized.shape, len(result.colorized_jpeg) > 0, stats["rss_mb"] > 0)
print("modules", " ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def run_robot_path(onnx_path):
    """The node's library path (parameters -> pipeline -> decode, depth, colorize, JPEG) for an .onnx
    spec in a fresh process where NOT_ON_THE_ROBOT cannot be imported; ONNX Runtime stands in for
    TensorRT. Returns the process."""
    config = os.path.join(os.path.dirname(INCLUDE), "config", "depth_node", "default.yaml")
    return subprocess.run([sys.executable, "-c", ROBOT_PATH, onnx_path, config, ",".join(NOT_ON_THE_ROBOT)],
                          env=dict(os.environ, PYTHONPATH=INCLUDE), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)


def test_node_library_path_for_an_onnx_spec_runs_without_torch(channel0_onnx):
    """What the arm64v8 image runs (no torch, transformers, hqq, onnx there) imports and runs."""
    proc = run_robot_path(channel0_onnx)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == "ok (480, 640) (480, 640, 3) True True", proc.stdout
    loaded = set(lines[-1].split()[1:])
    assert not loaded & set(NOT_ON_THE_ROBOT), loaded & set(NOT_ON_THE_ROBOT)


ROBOT_VARIANTS = ["tiny-da2", "tiny-da2@hqq8-dq", "random:fastdepth-mnv3"]


@pytest.mark.parametrize("variant", ROBOT_VARIANTS)
def test_every_model_the_robot_image_can_bake_in_passes_the_tensorrt71_audit(variant, tiny_dir, tmp_path,
                                                                              monkeypatch):
    """The arm64v8 image takes an export of any spec (da2-*, its @hqqN-dq, the student): each is
    opset 11 with only operators TensorRT 7.1 parses (tiny / random stand-ins of each architecture)."""
    if "hqq" in variant:
        pytest.importorskip("hqq")
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    spec = variant.replace("tiny-da2", tiny_dir)
    size = 64 if "fastdepth" in variant else 56
    out = str(tmp_path / "default.onnx")
    result = export.export_spec(spec, out, size, "640x480")
    assert result["opset"] == DEFAULT_OPSET == 11 and result["tensorrt_issues"] == [], result
    with open(out + ".json") as f:  # what the Dockerfile's arm64v8 step reads
        sidecar = json.load(f)
    assert sidecar["opset"] == 11 and sidecar["tensorrt_issues"] == [] and sidecar["spec"] == spec


def test_depth_anything_attention_runs_through_sdpa(tiny_dir):
    """Every Depth-Anything-V2 the library loads calls torch's scaled_dot_product_attention once per
    backbone layer (fused kernels), also when a config asked for eager attention (transformers 5)."""
    from torch.overrides import TorchFunctionMode

    from depth_estimation.models import da2
    from depth_fixtures import TINY

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.scaled_dot_product_attention:
                Count.calls += 1
            return func(*args, **(kwargs or {}))

    model = da2.from_hf_dir(tiny_dir)
    assert da2.attention_implementation(model) == da2.ATTENTION == "sdpa"
    with Count(), torch.inference_mode():
        model(pixel_values=torch.from_numpy(_input((56, 56))))
    assert Count.calls == TINY["num_layers"]
    model.backbone.config._attn_implementation = "eager"
    if "ALL_ATTENTION_FUNCTIONS" in vars(sys.modules[type(model.backbone).__module__]):  # per-call dispatch
        assert da2.attention_implementation(da2.use_sdpa(model)) == "sdpa"


def test_torch_runner_runs_in_inference_mode():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
            return x[:, 0]

    TorchRunner(Probe())(_input((14, 14)))
    assert seen == [(True, False)]


def test_torch_runner_runs_convolutions_channels_last_on_the_cpu():
    """On the CPU the runner converts the convolutions to NHWC (measured faster here) and the depth
    stays the same; channels_last=False keeps the model as it was."""
    runner, plain = TorchRunner(scaled_tiny_da2()), TorchRunner(scaled_tiny_da2(), channels_last=False)
    assert runner.channels_last and not plain.channels_last
    convs = [m for m in runner.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not any(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for m in plain.module.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1)
    x = _input()
    assert _rel(runner(x), plain(x)) < 1e-5


def test_flop_count_includes_the_attention_of_sdpa_models():
    """depth-bench's GFLOP/s: the count of a model on torch's CPU flash attention equals that of the
    same model on explicit MatMul/Softmax attention (torch's counter has no formula for that kernel)."""
    from depth_estimation.tools.bench import count_gflops

    model = scaled_tiny_da2()
    sdpa = count_gflops(model, (56, 70))
    model.backbone.config._attn_implementation = "eager"
    if "ALL_ATTENTION_FUNCTIONS" not in vars(sys.modules[type(model.backbone).__module__]):
        pytest.skip("this transformers fixes the attention when the model is built")
    assert sdpa == pytest.approx(count_gflops(model, (56, 70)), rel=1e-6)
