"""The tools on hostile outputs and inputs (issue 23, items 10-12), run as a user runs them (their
``main``): an output place that cannot take the file is one line and a non-zero exit before any work;
a file that is not a readable bag is one line saying so (and how to reindex it); ``--runs 0`` and an
image set with nothing to label are errors, not a zero exit."""
import os

import numpy as np
import pytest

from test_metrics import _affine_oracle, _scene, _write_rgbd_bag

# A place no file can be created in, even by root (the tests run as root here, for whom a
# read-only folder is writable): a path under a regular file, and /proc.
UNWRITABLE = ("under_a_file", "/proc/depth_test_output.json")


def _unwritable(tmp_path, kind, name="out.json"):
    if kind == "under_a_file":
        (tmp_path / "a_file").write_text("x")
        return str(tmp_path / "a_file" / name)
    return kind


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbd_tools")
    gts = [_scene(48, 64, seed) for seed in range(3)]
    path = str(root / "rgbd.bag")
    _write_rgbd_bag(path, gts)
    return path, _affine_oracle(root / "pred", gts)


def _one_error(err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], err
    return lines[0]


@pytest.mark.parametrize("kind", UNWRITABLE)
def test_depth_eval_refuses_an_unwritable_json_before_the_work(rgbd, tmp_path, capsys, kind):
    from depth_estimation.evaluation import evaluate

    bag, pred = rgbd
    out = _unwritable(tmp_path, kind)
    assert evaluate.main(["--bag", bag, "--predictions", str(pred), "--json", out]) == 1
    captured = capsys.readouterr()
    _one_error(captured.err, "cannot write", out)
    assert "abs_rel" not in captured.out  # nothing evaluated, nothing lost
    assert evaluate.main(["--bag", bag, "--predictions", str(pred), "--json", str(tmp_path / "new" / "e.json")]) == 0


@pytest.mark.parametrize("damage", ["truncated", "not_a_bag", "missing"])
def test_depth_eval_on_a_file_that_is_not_a_readable_bag_is_one_line(rgbd, tmp_path, capsys, damage):
    from depth_estimation.evaluation import evaluate

    bag, pred = rgbd
    data = open(bag, "rb").read()
    broken = tmp_path / "broken.bag"
    if damage == "truncated":  # a recorder killed before it wrote its index
        broken.write_bytes(data[: len(data) // 2])
    elif damage == "not_a_bag":
        broken.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code = evaluate.main(["--bag", str(broken), "--predictions", str(pred)])
    line = _one_error(capsys.readouterr().err, str(broken))
    assert code == 1
    if damage == "missing":
        assert "no such file" in line
    else:
        assert "not a readable ROS 1 bag" in line and "rosbag reindex %s" % broken in line


def test_depth_bench_zero_runs_and_an_unwritable_result_are_errors(tmp_path, capsys):
    from depth_estimation.tools import bench

    with pytest.raises(SystemExit) as caught:
        bench.main(["--variants", "random:da2-small", "--runs", "0"])
    assert caught.value.code == 2 and "--runs: 0: at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--variants", "random:da2-small", "--warmup", "-1"])
    capsys.readouterr()
    out = _unwritable(tmp_path, "under_a_file", "b.csv")
    assert bench.main(["--variants", "random:da2-small", "--runs", "1", "--csv", out]) == 2
    _one_error(capsys.readouterr().err, "cannot write", out)


def test_depth_distill_label_with_nothing_to_label_is_an_error(tiny_dir, tmp_path, capsys):
    from depth_estimation.distill import cli

    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["label", "--teacher", tiny_dir, "--input-size", "56", "--device", "cpu", "--no-progress"]
    assert cli.main(args + ["--images", str(empty), "--cache", str(tmp_path / "c1")]) == 2
    assert "nothing to label" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):  # named as images, not images
        (broken / ("%d.jpg" % i)).write_bytes(b"not a jpeg %d" % i)
    assert cli.main(args + ["--images", str(broken), "--cache", str(tmp_path / "c2")]) == 1
    assert "every one of the 3 items" in capsys.readouterr().err
    out = _unwritable(tmp_path, "under_a_file", "cache")
    assert cli.main(args + ["--images", str(broken), "--cache", out]) == 2
    assert "cannot write %s" % out in capsys.readouterr().err


def test_depth_live_refuses_an_unwritable_out_before_the_camera(tmp_path, capsys):
    pytest.importorskip("duckietown.sdk", reason="duckietown-sdk is not installed (make setup)")
    from depth_estimation.tools import live

    out = _unwritable(tmp_path, "under_a_file", "live")

    class NoCamera:  # the check comes first: a camera would be an error of its own
        def start(self, on_frame):
            raise AssertionError("the camera was started")

    args = live.parse_args(["--robot", "testbot", "--model", "random:da2-small", "--out", out, "--no-window"])
    assert live.run(args, camera=NoCamera()) == live.EXIT_PARAMS
    assert "cannot write %s" % os.path.abspath(out) in capsys.readouterr().err


def _writers(missing, out):
    """Each long-running writer, on a model or input that does not exist: with the check first the
    error names the output place; without it the work would start and fail on the missing input."""
    from depth_estimation.distill import cli
    from depth_estimation.evaluation import sim_bench, sim_drive
    from depth_estimation.tools import export, quantize, sweep

    return {
        "export": lambda: export.main([missing, "--out", out]),
        "quantize --bits": lambda: quantize.main([missing, "--bits", "4", "--out", out]),
        "quantize --int8": lambda: quantize.main([missing + ".onnx", "--int8", "--out", out]),
        "depth-distill train": lambda: cli.main(["train", "--cache", missing, "--out", out]),
        "depth-sweep": lambda: sweep.main(["--models", missing, "--out", out, "--no-progress"]),
        "sim_bench": lambda: sim_bench.main(["--bags", missing, "--models", "road-plane", "--out", out]),
        "depth-sim-drive": lambda: sim_drive.main(["--model", missing, "--runs", "1", "--json", out]),
    }


@pytest.mark.parametrize("tool", ["export", "quantize --bits", "quantize --int8", "depth-distill train",
                                  "depth-sweep", "sim_bench", "depth-sim-drive"])
def test_every_writer_refuses_an_unwritable_output_before_the_work(tmp_path, capsys, tool):
    out = _unwritable(tmp_path, "under_a_file", "result")
    missing = str(tmp_path / "no_such_model")
    assert _writers(missing, out)[tool]() == 2
    line = _one_error(capsys.readouterr().err, "cannot write")
    assert os.path.abspath(out) in line and "no_such_model" not in line
