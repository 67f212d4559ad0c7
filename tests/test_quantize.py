"""HQQ quantization of the backbone: saved once, loaded without re-quantizing, packed == dequantized."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import INCLUDE, ROOT
from depth_estimation.io.paths import file_bytes

pytest.importorskip("hqq")
from depth_estimation.models import da2  # noqa: E402
from depth_estimation.models import hqq as Q  # noqa: E402
from depth_estimation.tools import quantize as quantize_cmd  # noqa: E402

PINS = os.path.join(ROOT, ".build", "py38-pins")
# hidden 128: group 64 divides every backbone linear; the linears are 70% of the weights
CFG = dict(hidden_size=128, num_layers=4, num_heads=2, out_indices=(1, 2, 3, 4),
           neck_hidden_sizes=(8, 16, 32, 32), fusion_hidden_size=16)
# HQQ storage with fp32 compute: W_q packed + fp32 scale and zero per group of 64 (= 1 bit/weight);
# 3 bits pack 10 values per int32 (3.2 bits)
BITS_PER_WEIGHT = {8: 9.0, 4: 5.0, 3: 4.2, 2: 3.0, 1: 2.0}


def small_model(seed=0):
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    return DepthAnythingForDepthEstimation(da2.make_config(**CFG)).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 70, 98, generator=torch.Generator().manual_seed(1))


def run(model, x):
    with torch.no_grad():
        return model(pixel_values=x).predicted_depth


def rel(a, b):  # random tiny models output ~1e-7: compare relative to the output's scale
    return ((a - b).norm() / b.norm()).item()


def backbone_linears(model):
    return [m for m in model.backbone.modules()
            if isinstance(m, nn.Linear) or type(m).__name__ == "HQQLinear"]


def no_quantizer(monkeypatch):
    """Any call of hqq's quantizer fails (loading must only read the stored packed weights)."""
    from hqq.core import quantize as hq

    def fail(*args, **kwargs):
        raise AssertionError("the quantizer ran")

    monkeypatch.setattr(hq.Quantizer, "quantize", fail)
    monkeypatch.setattr(hq.HQQLinear, "quantize", fail)
    monkeypatch.setattr(hq.Quantizer, "optimize_weights", fail)


@pytest.mark.parametrize("bits", Q.BITS)
def test_save_load_gives_the_saved_model_without_requantizing(bits, x, tmp_path, monkeypatch):
    model = Q.quantize_model(small_model(), bits)
    assert len(backbone_linears(model)) == 24
    assert all(type(m).__name__ == "HQQLinear" for m in backbone_linears(model))
    assert not any(type(m).__name__ == "HQQLinear" for m in model.neck.modules())
    packed = run(model, x)
    folder = Q.save_quantized(model, str(tmp_path / "q"), {"base": "tiny"})

    no_quantizer(monkeypatch)
    loaded = Q.load_quantized(folder)
    assert sum(type(m).__name__ == "HQQLinear" for m in loaded.modules()) == 24
    assert torch.equal(run(loaded, x), packed)
    dequantized = Q.load_quantized(folder, dequantize=True)
    assert not any(type(m).__name__ == "HQQLinear" for m in dequantized.modules())
    assert rel(run(dequantized, x), packed) < 1e-5
    assert rel(run(Q.dequantize_model(model), x), packed) < 1e-5


def test_the_quantizer_guard_bites(monkeypatch):
    no_quantizer(monkeypatch)
    with pytest.raises(AssertionError, match="the quantizer ran"):
        Q.quantize_model(small_model(), 4)


def test_error_grows_as_bits_fall(x):
    ref = run(small_model(), x)
    err = {bits: rel(run(Q.quantize_model(small_model(), bits), x), ref) for bits in Q.BITS}
    assert err[8] < 0.01, err
    assert err[8] < err[4] < err[3] < err[2] < err[1], err


@pytest.mark.parametrize("bits", Q.BITS)
def test_weight_bytes_count_packed_weights(bits):
    fp32 = small_model()
    linear_fp32 = sum(4 * (m.weight.numel() + m.bias.numel()) for m in backbone_linears(fp32))
    rest = Q.weight_bytes(fp32) - linear_fp32
    assert linear_fp32 > 2 * rest  # the linears dominate
    quantized = Q.quantize_model(small_model(), bits)
    linear_q = Q.weight_bytes(quantized) - rest
    weights = sum(m.weight.numel() for m in backbone_linears(fp32))
    biases = (linear_fp32 - 4 * weights) // 4
    bits_per_weight = 8.0 * (linear_q - 4 * biases) / weights
    assert bits_per_weight == pytest.approx(BITS_PER_WEIGHT[bits], abs=0.05)
    if bits == 4:
        assert linear_q <= 0.30 * linear_fp32
    assert Q.weight_bytes(Q.dequantize_model(quantized)) == Q.weight_bytes(fp32)


def test_weight_bytes_count_shared_storage_once():
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    b.weight = nn.Parameter(a.weight.data)  # another Parameter over the same storage
    assert Q.weight_bytes(nn.Sequential(a, b)) == 4 * (64 + 8 + 8)


def test_refuses_to_overwrite_and_replaces_atomically_when_asked(tmp_path):
    model = Q.quantize_model(small_model(), 4)
    folder = str(tmp_path / "q")
    Q.save_quantized(model, folder, {"base": "tiny"})
    with pytest.raises(FileExistsError):
        Q.save_quantized(Q.quantize_model(small_model(), 2), folder, {"base": "tiny"})
    assert Q.read_info(folder)["bits"] == 4
    Q.save_quantized(Q.quantize_model(small_model(), 2), folder, {"base": "tiny"}, overwrite=True)
    assert Q.read_info(folder)["bits"] == 2
    assert sorted(os.listdir(str(tmp_path))) == ["q"]  # no temporary folders left behind
    assert file_bytes(folder) == sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def test_folder_has_the_documented_fields(tmp_path):
    model = small_model()
    config = model.config.to_dict()
    folder = Q.save_quantized(Q.quantize_model(model, 3, group_size=32), str(tmp_path / "q"),
                              {"base": "random:tiny"})
    assert sorted(os.listdir(folder)) == ["model.safetensors", "quantization.json"]
    with open(os.path.join(folder, "quantization.json")) as f:
        info = json.load(f)
    assert (info["method"], info["bits"], info["group_size"], info["axis"], info["base"],
            info["format_version"]) == ("hqq", 3, 32, 1, "random:tiny", 1)
    assert info["config"]["backbone_config"]["hidden_size"] == config["backbone_config"]["hidden_size"] == 128
    assert len(info["layers"]) == 24
    # checkpoint names in any transformers version
    query = info["layers"]["backbone.encoder.layer.0.attention.attention.query"]
    assert (query["shape"], query["nbits"], query["group_size"], query["packing"]) == \
        ([128, 128], 3, 32, "3bit_32")
    with open(os.path.join(folder, "model.safetensors"), "rb") as f:  # a safetensors JSON header, no pickle
        assert json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]["method"] == "hqq"
    from safetensors import safe_open

    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("backbone.encoder.layer.0.mlp.fc1.W_q").dtype == torch.int32
    prefix = "backbone.encoder.layer.3.mlp.fc2."
    assert {prefix + k for k in ("W_q", "scale", "zero", "bias")} <= keys and prefix + "weight" not in keys
    assert "neck.fusion_stage.layers.0.projection.weight" in keys


def test_quantize_needs_a_dividing_group_and_known_bits():
    with pytest.raises(ValueError, match="group size 96"):
        Q.quantize_model(small_model(), 4, group_size=96)
    with pytest.raises(ValueError, match="8, 4, 3, 2, 1"):
        Q.quantize_model(small_model(), 5)
    with pytest.raises(ValueError, match="quantize_model"):
        Q.save_quantized(small_model(), "/nonexistent/never", {"base": "x"})


def test_cli_quantizes_a_local_folder(tmp_path, x, capsys):
    base = str(tmp_path / "base")
    small_model().save_pretrained(base, safe_serialization=True)
    out = str(tmp_path / "out")
    assert quantize_cmd.main([base, "--bits", "4", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "MB ->" in printed and out in printed
    info = Q.read_info(out)
    assert (info["bits"], info["group_size"], info["base"]) == (4, 64, base)
    assert quantize_cmd.main([base, "--bits", "2", "--out", out]) == 1
    assert "--force" in capsys.readouterr().err
    assert quantize_cmd.main([base, "--bits", "2", "--out", out, "--force"]) == 0
    assert Q.read_info(out)["bits"] == 2
    assert 0.01 < rel(run(Q.load_quantized(out), x), run(small_model(), x)) < 0.5


@pytest.mark.parametrize("spec, says", [
    ("random:fastdepth-mnv3", "Depth-Anything-V2"),  # the student has no backbone to quantize
    ("random:da2-small@hqq4", "already quantized"),
    ("nonsense-model", "nonsense-model"),
])
def test_cli_refuses_what_it_cannot_quantize_in_one_line(spec, says, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert quantize_cmd.main([spec, "--bits", "4", "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not os.path.exists(out)


def test_quantize_command_refuses_the_student_without_a_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([INCLUDE, os.environ.get("PYTHONPATH", "")]),
               DEPTH_ESTIMATION_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "depth_estimation.quantize", "random:fastdepth-mnv3", "--bits", "4"]
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert proc.returncode in (1, 2) and proc.stdout == "", (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "fastdepth" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists()


def test_default_dir(monkeypatch, tmp_path):
    """Readable (the spec sanitised, bits and group size) and keyed by content (a short hash)."""
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path))
    name = os.path.basename(Q.default_dir("random:da2-small", 4, 64))
    assert os.path.dirname(Q.default_dir("random:da2-small", 4, 64)) == str(tmp_path / "quantized")
    assert re.fullmatch(r"random_da2-small@hqq4-g64-[0-9a-f]{10}", name), name
    assert re.fullmatch(r"data_my_model@hqq2-g32-[0-9a-f]{10}",
                        os.path.basename(Q.default_dir("/data/my model/", 2, 32)))
    assert Q.default_dir("random:da2-small", 4, 64) == Q.default_dir("random:da2-small", 4, 64)
    assert Q.default_dir("random:da2-small", 4, 64) != Q.default_dir("random:da2-small", 4, 32)
    assert Q.default_dir("random:da2-small", 4, 64) != Q.default_dir("random:da2-base", 4, 64)
    monkeypatch.delenv("DEPTH_ESTIMATION_CACHE")
    assert os.path.dirname(Q.default_dir("da2-small", 8, 64)) == \
        os.path.expanduser("~/.cache/depth_estimation/quantized")
    assert os.path.basename(Q.default_dir("da2-small", 8, 64)).startswith("da2-small@hqq8-g64-")


def test_default_dir_is_keyed_by_the_base_weights_not_the_spec_text(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    for sub, seed in (("a", 0), ("b", 1)):
        small_model(seed).save_pretrained(str(tmp_path / sub / "model"), safe_serialization=True)
    monkeypatch.chdir(tmp_path / "a")
    in_a = Q.default_dir("./model", 4)
    assert Q.default_dir("model", 4) == in_a  # the same folder, however it is written
    monkeypatch.chdir(tmp_path / "b")
    assert Q.default_dir("model", 4) != in_a  # another folder of the same name
    weights = str(tmp_path / "b" / "model" / "model.safetensors")
    before = Q.default_dir("model", 4)
    stat = os.stat(weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # touched
    touched = Q.default_dir("model", 4)
    assert touched != before
    small_model(2).save_pretrained(str(tmp_path / "b" / "model"), safe_serialization=True)  # rewritten
    assert Q.default_dir("model", 4) not in (before, touched)


def test_quantized_spec_follows_its_base_weights(monkeypatch, tmp_path, x):
    """``<folder>@hqq8`` quantizes again when the folder's weights change, instead of loading stale ones."""
    from depth_estimation.models.loading import load_net
    from depth_estimation.models.specs import parse_spec

    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    base = str(tmp_path / "model")
    small_model(0).save_pretrained(base, safe_serialization=True)
    first = run(load_net(parse_spec(base + "@hqq8")).hf, x)
    small_model(1).save_pretrained(base, safe_serialization=True)
    second = run(load_net(parse_spec(base + "@hqq8")).hf, x)
    assert rel(second, run(small_model(1), x)) < 0.05 < rel(second, first)
    assert len(os.listdir(str(tmp_path / "cache" / "quantized"))) == 2


def test_quantized_folder_runs_on_onnxruntime_like_on_torch(monkeypatch, tmp_path):
    """A folder written by ``python3 -m depth_estimation.quantize`` (packed HQQ layers) exports to ONNX
    with its dequantized weights."""
    import numpy as np

    from depth_estimation.runtime.estimator import DepthEstimator

    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    base, out = str(tmp_path / "base"), str(tmp_path / "q8")
    small_model().save_pretrained(base, safe_serialization=True)
    assert quantize_cmd.main([base, "--bits", "8", "--out", out]) == 0
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    want = DepthEstimator(out, input_size=56).load().infer(rgb)
    got = DepthEstimator(out, input_size=56, backend="onnxruntime", device="cpu").load().infer(rgb)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_imports_without_hqq():
    code = ("import sys; sys.modules['hqq'] = None\n"
            "import depth_estimation.models.hqq as q\n"
            "from depth_fixtures import tiny_da2\n"
            "try:\n    q.quantize_model(tiny_da2(), 4, group_size=32)\n"
            "except ImportError as e:\n    print(e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [INCLUDE, os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert proc.returncode == 0 and "pip install hqq" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.skipif(not os.path.isdir(PINS), reason="no pinned transformers in .build/py38-pins")
def test_folder_loads_under_the_other_transformers(tmp_path, x):
    """Quantized on a workstation (transformers 5), run on the robot (4.46), and the other way round."""
    import transformers
    from safetensors.torch import load_file, save_file

    small_model().save_pretrained(str(tmp_path / "base"), safe_serialization=True)
    model = Q.quantize_model(da2.from_hf_dir(str(tmp_path / "base")).eval(), 4)  # config with a torch dtype
    folder = Q.save_quantized(model, str(tmp_path / "q"), {"base": "tiny"})
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    pinned = transformers.__version__ == "4.46.3"
    path = [INCLUDE] + ([] if pinned else [PINS])
    code = ("import sys, torch, transformers; from safetensors.torch import load_file, save_file\n"
            "torch.set_num_threads(1)\n"  # bit-exact comparison: the same reduction order on both sides
            "from depth_estimation.models import hqq as q\n"
            "m = q.load_quantized(sys.argv[1]); x = load_file(sys.argv[2])['x']\n"
            "with torch.no_grad(): save_file({'y': m(pixel_values=x).predicted_depth}, sys.argv[3])\n"
            "print(transformers.__version__)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    env.pop("DEPTH_EXPECT_TRANSFORMERS", None)
    proc = subprocess.run([sys.executable, "-c", code, folder, str(tmp_path / "x.safetensors"),
                           str(tmp_path / "y.safetensors")], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.split()[-1] != transformers.__version__
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["y"], run(model, x))
    finally:
        torch.set_num_threads(threads)
