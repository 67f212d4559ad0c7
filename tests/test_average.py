"""``depth-distill average``: a student whose weights are the weighted mean of several students'."""
import os

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


@pytest.mark.parametrize("extra, message", [
    (["--weights", "1"], "1 weights for 2 students"),
    (["--weights", "1", "-1"], "non-negative"),
])
def test_bad_weights_are_refused(students, tmp_path, extra, message):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit, match=message):
        cli.main(["average", "--students", *students, "--out", str(out)] + extra)
    assert not out.exists()


def test_one_student_or_a_missing_one_is_refused(students, tmp_path):
    with pytest.raises(SystemExit, match="two students or more"):
        cli.main(["average", "--students", students[0], "--out", str(tmp_path / "one")])
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit, match="student config missing: %s" % missing):
        cli.main(["average", "--students", students[0], missing, "--out", str(tmp_path / "two")])


def test_an_existing_output_is_never_overwritten(students, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not empty"):
        cli.main(["average", "--students", *students, "--out", str(out)])
    assert os.listdir(out) == ["keep.txt"]
