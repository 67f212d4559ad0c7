"""depth-sweep: every applicable model x precision cell scored once, resumable, table and plots."""
import json
import os
import shutil

import pytest

from depth_estimation.evaluation import convert_rgbd, da2k, evaluate
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.tools import sweep
from conftest import ROOT

TUM = os.path.join(ROOT, "assets", "frames")  # the real TUM fr1/desk frames the project ships


@pytest.fixture
def data(tmp_path):
    tum = TUM
    bag = str(tmp_path / "tum.bag")
    assert convert_rgbd.main(["rgbd", "--rgb", tum + "/rgb_*.png", "--depth", tum + "/depth/depth_*.png",
                              "--depth-scale", "5000", "--out", bag]) == 0
    root = tmp_path / "da2k"
    (root / "indoor").mkdir(parents=True)
    shutil.copy(os.path.join(tum, "rgb_1.png"), root / "indoor" / "a.png")
    pairs = [{"point1": [100, 100], "point2": [400, 600], "closer_point": "point2"},
             {"point1": [50, 320], "point2": [300, 320], "closer_point": "point1"}]
    (root / "annotations.json").write_text(json.dumps({"indoor/a.png": pairs}))
    return bag, str(root)


def test_sweep_cells_resume_and_outputs(tiny_dir, data, tmp_path, monkeypatch):
    bag, da2k_root = data
    monkeypatch.setenv("DEPTH_ESTIMATION_CACHE", str(tmp_path / "cache"))  # quantized copies land here
    out = str(tmp_path / "sweep")
    rows = sweep.sweep([tiny_dir, "random:fastdepth-mnv3"], ["fp32", "hqq8"], out, bag, da2k_root,
                       progress=False)
    variants = sorted(r["variant"] for r in rows)
    assert variants == sorted([tiny_dir, tiny_dir + "@hqq8", "random:fastdepth-mnv3"])  # no HQQ student
    by = {r["variant"]: r for r in rows}
    for spec, r in by.items():  # each cell's numbers are depth-eval's and depth-da2k's for that model
        assert r["nyu_frames"] == 2 and r["latency_ms_p50"] > 0 and r["weight_bytes"] > 0
        est = DepthEstimator(spec, input_size=None).load()
        expected = evaluate.evaluate(bag, "lsq-disparity", estimator=est)["metrics"]
        for key in ("abs_rel", "delta1", "rmse"):
            assert r[key] == pytest.approx(expected[key], rel=1e-6), (spec, key)
        accuracy = da2k.score(da2k.from_model(da2k_root, est), da2k_root, "disparity")["accuracy"]
        assert r["da2k_accuracy"] == accuracy, spec
    assert by[tiny_dir + "@hqq8"]["weight_bytes"] < by[tiny_dir]["weight_bytes"]
    assert by[tiny_dir + "@hqq8"]["bits"] == 8 and by[tiny_dir]["bits"] == 32
    saved = json.load(open(os.path.join(out, "sweep.json")))["rows"]
    assert len(saved) == 3
    header = open(os.path.join(out, "sweep.csv")).readline().strip().split(",")
    assert header == sweep.COLUMNS
    for key in ("abs_rel", "da2k_accuracy", "latency_ms_p50", "weight_bytes"):
        assert open(os.path.join(out, key + "_vs_bits.png"), "rb").read(4) == b"\x89PNG"
    ran = []
    monkeypatch.setattr(sweep, "run_cell", lambda spec, *a: ran.append(spec) or {"latency_ms_p50": 1.0})
    again = sweep.sweep([tiny_dir, "random:fastdepth-mnv3"], ["fp32", "hqq8", "hqq4"], out, bag, da2k_root,
                        progress=False)
    assert ran == [tiny_dir + "@hqq4"]  # finished cells are skipped, only the new one runs
    assert len(again) == 4


def test_sweep_needs_something_to_score(tmp_path, capsys):
    assert sweep.main(["--models", "random:da2-small", "--out", str(tmp_path / "s")]) == 2
    assert "nothing to score" in capsys.readouterr().err


def test_sweep_refuses_a_bad_spec_before_any_cell(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "run_cell", lambda *a: pytest.fail("a cell ran"))
    out = tmp_path / "s"
    assert sweep.main(["--models", "random:da2-small,nonsense-model", "--precisions", "fp32",
                       "--da2k", str(tmp_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nonsense-model" in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("args, says", [
    (["--backend", "nonsense"], "invalid choice: 'nonsense'"),
    (["--input-size", "-14"], "positive"),
    (["--align", "mean"], "invalid choice: 'mean'"),
])
def test_sweep_options_are_the_shared_ones(args, says, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "run_cell", lambda *a: pytest.fail("a cell ran"))
    argv = ["--models", "random:da2-small", "--da2k", str(tmp_path), "--out", str(tmp_path / "s")] + args
    try:
        status = sweep.main(argv)
    except SystemExit as exc:  # argparse refuses it
        status = exc.code
    assert status == 2
    assert says in capsys.readouterr().err


def test_sweep_help_names_the_shared_options(capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--backend {auto,torch,onnxruntime,tensorrt}", "--input-size N", "0 = the model's own size",
                 "--models", "--precisions", "--nyu-bag", "--da2k", "--align", "--out", "--no-progress"):
        assert flag in text, flag
