"""``depth-distill average``: a student whose weights are the weighted mean of several students'."""
import json
import os
import re

import pytest
import torch

from depth_estimation.distill import average, cli
from depth_estimation.models import fastdepth


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    root = tmp_path_factory.mktemp("students")
    a = fastdepth.save_student(fastdepth.random_student(0), str(root / "a"))
    b = fastdepth.save_student(fastdepth.random_student(1), str(root / "b"), half=True)
    return a, b


def test_cli_writes_the_weighted_mean_of_every_float_tensor(students, tmp_path):
    a, b = students
    out = str(tmp_path / "avg")
    assert cli.main(["average", "--students", a, b, "--weights", "1", "3", "--out", out]) == 0
    got = fastdepth.load_student(out).state_dict()
    sa, sb = fastdepth.load_student(a).state_dict(), fastdepth.load_student(b).state_dict()
    floats = [k for k in got if got[k].is_floating_point()]
    assert any("running_var" in k for k in floats)  # batch-norm statistics are averaged too
    for key in floats:
        torch.testing.assert_close(got[key], 0.25 * sa[key] + 0.75 * sb[key], rtol=1e-6, atol=1e-6)
    assert not torch.equal(got[floats[0]], sa[floats[0]])


def test_equal_weights_by_default_and_the_average_runs(students):
    a, b = students
    model = average.average_students([a, b])
    sa, sb = fastdepth.load_student(a).state_dict(), fastdepth.load_student(b).state_dict()
    key = next(k for k, v in sa.items() if v.is_floating_point())
    torch.testing.assert_close(model.state_dict()[key], (sa[key] + sb[key]) / 2)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 64, 96) and torch.isfinite(out).all()


def test_half_output_stores_float16(students, tmp_path):
    out = str(tmp_path / "half")
    assert cli.main(["average", "--students", *students, "--out", out, "--half"]) == 0
    assert fastdepth._read_config(out)["weights_dtype"] == "float16"


def _refused(argv, message, capsys):
    assert cli.main(["average"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("depth-distill average: error: ") and re.search(message, err), err


@pytest.mark.parametrize("extra, message", [
    (["--weights", "1"], "1 weights for 2 students"),
    (["--weights", "1", "-1"], "finite and non-negative"),
    (["--weights", "nan", "1"], "finite and non-negative"),
    (["--weights", "inf", "1"], "finite and non-negative"),
    (["--weights", "0", "0"], "positive sum"),
])
def test_bad_weights_are_refused(students, tmp_path, extra, message, capsys):
    out = tmp_path / "bad"
    _refused(["--students", *students, "--out", str(out)] + extra, message, capsys)
    assert not out.exists()


def test_one_student_a_missing_one_or_another_model_is_refused(students, tmp_path, capsys):
    _refused(["--students", students[0], "--out", str(tmp_path / "one")], "two students or more", capsys)
    missing = str(tmp_path / "run")  # e.g. a run folder instead of <run>/student
    _refused(["--students", students[0], missing, "--out", str(tmp_path / "two")],
             re.escape("student config missing: %s" % missing) + r".*expected a student folder", capsys)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "depth_anything"}))
    _refused(["--students", students[0], str(other), "--out", str(tmp_path / "three")],
             "model_type 'depth_anything' is not", capsys)
    assert not any((tmp_path / name).exists() for name in ("one", "two", "three"))


def test_an_existing_output_is_never_overwritten(students, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _refused(["--students", *students, "--out", str(out)], "exists and is not empty", capsys)
    assert os.listdir(out) == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _refused(["--students", *students, "--out", str(a_file)], "not a folder", capsys)
    assert a_file.read_text() == "x"
