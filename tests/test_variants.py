"""Model variants through the one estimator: the student, HQQ specs, ONNX Runtime, and depth-bench."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import INCLUDE, ROOT
from depth_estimation.io.paths import file_bytes
from depth_estimation.models.specs import parse_spec
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.tools import bench

DEPTH_BENCH = os.path.join(ROOT, "packages", "depth_estimation", "scripts", "depth-bench")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _rgb(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_student_runs_at_its_own_input_size():
    est = DepthEstimator("random:fastdepth-mnv3", input_size=None).load()
    assert est.input_size == 192 and est.input_hw(480, 640) == (192, 256)
    depth = est.infer(_rgb(480, 640))
    assert depth.shape == (480, 640) and depth.dtype == np.float32 and (depth >= 0).all()


def test_quantized_spec_is_made_once_then_only_loaded(tiny_dir, cache, monkeypatch):
    from depth_estimation.models import hqq as quantize
    packed = DepthEstimator(tiny_dir + "@hqq8", input_size=56).load()
    saved = os.listdir(cache / "quantized")
    assert len(saved) == 1 and "@hqq8" in saved[0]
    monkeypatch.setattr(quantize, "quantize_model", lambda *a, **k: pytest.fail("re-quantized at start-up"))
    dq = DepthEstimator(tiny_dir + "@hqq8-dq", input_size=56).load()
    rgb = _rgb()
    a, b = packed.infer(rgb), dq.infer(rgb)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    fp32 = DepthEstimator(tiny_dir, input_size=56).load().infer(rgb)
    assert bench.abs_rel_aligned(a, fp32) < 0.05  # 8 bits stay close to the fp32 model


def test_onnxruntime_backend_exports_once_and_matches_torch(tiny_dir, cache):
    rgb = _rgb()
    torch_out = DepthEstimator(tiny_dir, input_size=56).load().infer(rgb)
    ort = DepthEstimator(tiny_dir, input_size=56, backend="onnxruntime").load()
    ort_out = ort.infer(rgb)
    np.testing.assert_allclose(ort_out, torch_out, rtol=1e-3, atol=1e-3 * np.abs(torch_out).max())
    exported = list((cache / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    mtime = exported[0].stat().st_mtime_ns
    again = DepthEstimator(tiny_dir, input_size=56, backend="onnxruntime").load()
    again.infer(rgb)
    assert exported[0].stat().st_mtime_ns == mtime  # reused, not exported again
    by_file = DepthEstimator(str(exported[0]), backend="onnxruntime").load()
    assert by_file.input_hw(120, 160) == ort.input_hw(120, 160)
    np.testing.assert_allclose(by_file.infer(rgb), ort_out, rtol=1e-5, atol=1e-6 * np.abs(ort_out).max())
    with pytest.raises(ValueError, match="onnxruntime"):
        DepthEstimator(str(exported[0]), backend="torch")


def test_bench_writes_every_documented_field(tiny_dir, cache, tmp_path, real_jpeg):
    frames = bench.load_frames(os.path.join(bench.DEFAULT_FRAMES))
    assert len(frames) == 2 and frames[0][:3] == b"\xff\xd8\xff"
    rows = bench.run([tiny_dir, tiny_dir + "@hqq4"], ["torch", "onnxruntime"], [56], frames, runs=2, warmup=1)
    paths = {(os.path.basename(r["variant"]), r["backend"], r["path"]) for r in rows}
    assert ("tiny_da2", "torch", "bare") in paths and ("tiny_da2", "torch", "node") in paths
    assert ("tiny_da2", "torch", "pipeline") in paths and ("tiny_da2", "onnxruntime", "bare") in paths
    assert ("tiny_da2@hqq4", "torch", "bare") in paths
    metric = [r for r in rows if r["path"] == "metric"]  # the metric outputs' own cost, once per run
    assert len(metric) == 1 and metric[0]["latency_ms_p50"] > 0 and "state OK" in metric[0]["note"]
    rows = [r for r in rows if r["path"] != "metric"]
    for row in rows:
        assert not row.get("note"), row
        for field in ("latency_ms_p50", "latency_ms_p95", "fps", "weight_bytes", "file_bytes",
                      "peak_rss_bytes", "gflops", "gflops_per_s", "matmul_gflops_per_s"):
            assert row.get(field) is not None and row[field] > 0, (field, row)
    quantized = [r for r in rows if r["variant"].endswith("@hqq4")]
    assert all(0 <= r["fidelity_abs_rel"] < 1 for r in quantized)
    fp32 = next(r for r in rows
                if r["variant"] == tiny_dir and r["path"] == "bare" and r["backend"] == "torch")
    assert quantized[0]["weight_bytes"] < fp32["weight_bytes"]
    stream = [r for r in rows if r["path"] == "stream"]  # the node's threaded stream at the camera's 30 Hz
    assert len(stream) == 4 and all(r["stream_hz"] == 30.0 and r["frames_in"] >= 1 and r["frames_dropped"] == 0 for r in stream)
    ort = next(r for r in rows if r["variant"] == tiny_dir and r["path"] == "bare" and r["backend"] == "onnxruntime")
    assert ort["vs_torch"] == pytest.approx(ort["fps"] / fp32["fps"]) and fp32["vs_torch"] == pytest.approx(1.0)
    assert quantized[0]["vs_base"] == pytest.approx(quantized[0]["fps"] / fp32["fps"])
    assert fp32["vs_pipeline"] > 0 and fp32["matmul_fraction"] > 0
    out = tmp_path / "b"
    bench.write_outputs(rows, str(out) + ".json", str(out) + ".csv", str(out) + ".png", {"command": "test"})
    data = json.loads((tmp_path / "b.json").read_text())
    assert len(data["rows"]) == len(rows)
    header = (tmp_path / "b.csv").read_text().splitlines()[0].split(",")
    assert header == bench.FIELDS
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_cli_refuses_bad_specs(capsys):
    assert bench.main(["--variants", "random:da2-huge", "--runs", "1"]) == 2
    assert "da2-huge" in capsys.readouterr().err


def _depth_bench(args, cwd):
    """The depth-bench command as a user runs it; (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([INCLUDE, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, DEPTH_BENCH] + args, env=env, cwd=str(cwd), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_depth_bench_command_end_to_end(tiny_dir, cache, tmp_path):
    out = tmp_path / "r"
    rc, stdout, stderr = _depth_bench(["--variants", tiny_dir, "--backends", "torch", "--input-size", "56",
                                       "--runs", "2", "--warmup", "0", "--paths", "bare,node,stream",
                                       "--json", str(out) + ".json", "--csv", str(out) + ".csv",
                                       "--plot", str(out) + ".png"], tmp_path)
    assert rc == 0, (stdout + stderr)[-3000:]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert {r["path"] for r in rows} == {"bare", "node", "stream"}
    assert "latency_ms_p50" in stdout  # the printed table
    assert (tmp_path / "r.csv").exists() and (tmp_path / "r.png").exists()


@pytest.mark.parametrize("args, names", [
    (["--backends", "nonsense"], ["'nonsense'", "torch, onnxruntime, tensorrt"]),
    (["--backends", "torch,tensorrt,onnx"], ["'onnx'", "torch, onnxruntime, tensorrt"]),
    (["--backends", ","], ["no backend", "torch, onnxruntime, tensorrt"]),
    (["--variants", "nonsense-model"], ["nonsense-model"]),
    (["--variants", ","], ["no model variants"]),
    (["--variants", "random:da2-small@hqq5"], ["@hqq5"]),
    (["--input-size", "big"], ["--input-size", "big"]),
])
def test_depth_bench_command_refuses_bad_options_in_one_line(args, names, tmp_path):
    """Exit 2 with one error line naming what is wrong (no traceback, no empty table, no cell run)."""
    rc, stdout, stderr = _depth_bench(args + ["--runs", "1", "--json", str(tmp_path / "b.json")], tmp_path)
    assert rc == 2, (stdout, stderr)
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert all(name in errors[0] for name in names), errors[0]
    assert stdout == "" and not (tmp_path / "b.json").exists()


def test_bench_run_refuses_bad_backends_before_any_work(monkeypatch):
    monkeypatch.setattr(bench, "matmul_gflops_per_s", lambda: pytest.fail("work started"))
    with pytest.raises(ValueError, match="'nonsense'.*torch, onnxruntime, tensorrt"):
        bench.run(["random:da2-small"], ["torch", "nonsense"], [None], [b""], runs=1, warmup=0)
    with pytest.raises(ValueError, match="no model variants"):
        bench.run([], ["torch"], [None], [b""], runs=1, warmup=0)


def _lstsq_abs_rel(pred, ref):
    """The fidelity measure as depth-bench computed it before it used metrics.fit_scale_shift."""
    pred, ref = pred.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    valid = ref > 1e-6 * max(ref.max(), 1e-30)
    a = np.stack([pred[valid], np.ones(valid.sum())], 1)
    scale, shift = np.linalg.lstsq(a, ref[valid], rcond=None)[0]
    return float(np.mean(np.abs(scale * pred[valid] + shift - ref[valid]) / ref[valid]))


@pytest.mark.parametrize("seed", range(5))
def test_fidelity_is_the_shared_scale_and_shift_fit(seed):
    rng = np.random.default_rng(seed)
    ref = (np.abs(rng.normal(size=(60, 80))) * 10.0 ** rng.uniform(-8, 3)).astype(np.float32)
    ref[rng.random(ref.shape) < 0.2] = 0  # pixels the measure skips
    pred = (ref * rng.uniform(0.5, 2) + rng.normal(scale=ref.std() * 0.1, size=ref.shape)).astype(np.float32)
    assert bench.abs_rel_aligned(pred, ref) == pytest.approx(_lstsq_abs_rel(pred, ref), rel=1e-12)
    exact = 3 * ref.astype(np.float64) + 2 * float(ref.max())  # an affine map of ref: fitted exactly
    assert bench.abs_rel_aligned(exact, ref) == pytest.approx(0, abs=1e-6)


def test_file_bytes_counts_what_is_stored_once(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "m" / "config.json").write_bytes(b"{}")
    (tmp_path / "m" / "sub" / "notes.txt").write_bytes(b"y" * 30)
    os.link(str(tmp_path / "m" / "model.safetensors"), str(tmp_path / "m" / "sub" / "hard.safetensors"))
    os.symlink(str(tmp_path / "m" / "model.safetensors"), str(tmp_path / "m" / "sub" / "link.safetensors"))
    os.symlink(str(tmp_path / "gone"), str(tmp_path / "m" / "dangling.json"))
    assert file_bytes(str(tmp_path / "m" / "config.json")) == 2
    assert file_bytes(str(tmp_path / "m")) == 1000 + 2 + 30  # recursive, each stored file once
    assert file_bytes(str(tmp_path / "m"), (".safetensors", ".json")) == 1002
    with pytest.raises(FileNotFoundError):
        file_bytes(str(tmp_path / "missing"))


def test_bench_file_bytes_of_a_spec(tiny_dir, cache):
    stored = sum(os.path.getsize(os.path.join(tiny_dir, f)) for f in os.listdir(tiny_dir)
                 if f.endswith((".safetensors", ".json")))
    assert bench.weights_path(parse_spec(tiny_dir)) == tiny_dir
    assert bench.file_bytes(parse_spec(tiny_dir)) == stored > 0
    assert bench.file_bytes(parse_spec("random:da2-small")) is None  # random weights are no file
    assert bench.file_bytes(parse_spec(tiny_dir + "@hqq4")) is None  # not quantized yet
    assert bench.weights_path(parse_spec(tiny_dir + "@hqq4")).startswith(str(cache / "quantized"))
