"""depth-sweep: every applicable model x precision cell scored once, resumable, table and plots."""
import json
import os
import shutil

import pytest

from depth_estimation.evaluation import convert_rgbd
from depth_estimation.tools import sweep
from conftest import SHARED_REAL


@pytest.fixture
def data(tmp_path):
    tum = os.path.join(SHARED_REAL, "tum_fr1_desk")
    if not os.path.isdir(tum):
        pytest.skip("../shared/data/real is not next to this checkout")
    bag = str(tmp_path / "tum.bag")
    assert convert_rgbd.main(["rgbd", "--rgb", tum + "/rgb_*.png", "--depth", tum + "/depth_*.png",
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
    rows = sweep.sweep([tiny_dir, "random:fastdepth-mnv3"], ["fp32", "hqq8"], out, bag, da2k_root, progress=False)
    variants = sorted(r["variant"] for r in rows)
    assert variants == sorted([tiny_dir, tiny_dir + "@hqq8", "random:fastdepth-mnv3"])  # no HQQ student
    for r in rows:
        assert r["nyu_frames"] == 2 and 0 <= r["delta1"] <= 1 and r["abs_rel"] > 0
        assert 0 <= r["da2k_accuracy"] <= 1 and r["latency_ms_p50"] > 0 and r["weight_bytes"] > 0
    by = {r["variant"]: r for r in rows}
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
