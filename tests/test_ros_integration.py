"""Real ROS: rostest against recorded bags, the node's start-up failure, and `make demo`'s driver.

These need the catkin workspace and ROS environment (`source env.sh`; `make test` does it).
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import cv2
import pytest

from conftest import ROOT


def _ros_env(tmp_path, **extra):
    if shutil.which("rostest") is None or not os.environ.get("ROS_PACKAGE_PATH"):
        pytest.fail("ROS environment missing: run through `make test` (or `source env.sh` first)")
    env = dict(os.environ, ROS_HOME=str(tmp_path / "ros_home"), **extra)
    env.pop("ROS_MASTER_URI", None)
    return env


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    from depth_fixtures import prepare

    directory = str(tmp_path_factory.mktemp("rostest_fixtures"))
    prepare(directory)
    return directory


def _rostest(tmp_path, test_file, *args):
    proc = subprocess.run(["rostest", "depth_estimation", test_file] + list(args),
                          env=_ros_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=400)
    tail = "\n".join(proc.stdout.splitlines()[-40:])
    assert proc.returncode == 0 and "RESULT: SUCCESS" in proc.stdout, tail


@pytest.mark.parametrize("test_file", ["camera_stream.test", "corrupt_frames.test", "no_backlog.test", "evaluate.test",
                                       "robust_stream.test", "node_switch.test", "process_frequency.test",
                                       "robot_params.test", "metric_depth.test"])
def test_rostest(test_file, fixtures, tmp_path):
    _rostest(tmp_path, test_file, "fixtures:=" + fixtures)


@pytest.mark.parametrize("args", [["sim_time:=true"], ["sim_time:=false"], ["sim_time:=true", "bag:=metric_unstamped"]],
                         ids=["sim_time", "wall_time", "unstamped"])
def test_a_looped_bag_keeps_every_output_and_the_timers(args, fixtures, tmp_path):
    """rosbag play -l (with --clock: ROS time jumps back at each loop, like a restarted simulator)."""
    _rostest(tmp_path, "looped_stream.test", "fixtures:=" + fixtures, *args)


def test_student_folder_runs_in_the_node(fixtures, tmp_path):
    """A student folder (what depth-distill train writes) is a model the node publishes depth with."""
    from depth_estimation.models.fastdepth import random_student, save_student

    student = save_student(random_student(seed=3), str(tmp_path / "student"))
    _rostest(tmp_path, "camera_stream.test", "fixtures:=" + fixtures, "model:=" + student)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("model, expected", [
    ("/nonexistent/depth_anything_v2_vits.pth", "/nonexistent/depth_anything_v2_vits.pth: file not found"),
    ("da2-small", "python3 -m depth_estimation.weights fetch da2-small"),
])
def test_missing_model_stops_the_node_with_one_line(model, expected, tmp_path):
    port = _free_port()
    env = _ros_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf"),
                   ROS_MASTER_URI="http://127.0.0.1:%d" % port)
    proc = subprocess.run(["roslaunch", "-p", str(port), "depth_estimation", "depth_node.launch", "veh:=t",
                           "model:=" + model, "required:=true"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    fatal = [line for line in proc.stdout.splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1, proc.stdout[-3000:]
    assert expected in fatal[0]
    assert "Traceback" not in proc.stdout


def test_demo_leaves_depth_pngs_and_a_latency_report(tiny_dir, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "depth_estimation.tools.demo", "--seconds", "3", "--model", tiny_dir,
                           "--out", str(out)], env=_ros_env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.loads((out / "latency_report.json").read_text())
    diag, why = report["diagnostics"], json.dumps(report) + "\n" + proc.stdout[-2000:]
    assert report["frames_sent"] == 90 and report["depth_frames"] >= 3, why
    assert int(diag["frames_in"]) + int(diag["frames_missed"]) == 90, why
    ends = ("frames_out", "frames_dropped", "frames_idle", "frames_rejected", "inference_errors")
    assert int(diag["frames_in"]) == sum(int(diag[k]) for k in ends), why  # idle: before image_saver listened
    assert float(diag["inference_ms_p50"]) > 0, why
    pngs = sorted((out / "colorized").glob("*.png"))
    # image_saver and the recorder are two subscribers (queue 1): each may miss a frame at the edges
    assert len(pngs) >= 3 and report["colorized_pngs"] == len(pngs), why
    assert abs(len(pngs) - report["depth_frames"]) <= 1, why
    assert sorted(p.name for p in (out / "colorized").iterdir()) == [p.name for p in pngs], "not only PNGs"
    assert not (out / "outputs.bag.active").exists()
    assert cv2.imread(str(pngs[0])).shape == (720, 1280, 3)
    assert cv2.imread(str(out / "montage.png")).shape == (360, 1280, 3)  # camera | depth, 640 wide each
    assert "Latency report" in proc.stdout and "inference ms p50" in proc.stdout
    # the model alone, timed in the same run, next to the node's output rate
    assert report["bare"]["bare_hz"] > 0 and report["bare"]["backend"] == diag["backend"], why
    assert report["output_vs_bare"] == round(float(diag["output_hz"]) / report["bare"]["bare_hz"], 2), why
    assert "model alone, this run" in proc.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(out)], stdout=subprocess.PIPE).stdout.split()
    assert not leftovers, "demo left processes running"


def test_demo_runs_each_model_at_its_own_size():
    from depth_estimation.tools import demo

    assert demo.own_input_size("random:fastdepth-mnv3") == ["input_size:=0"]  # the student's own 192
    assert demo.own_input_size("random:da2-small") == []  # the embedded 308 of default.yaml


def test_demo_stops_a_process_group_only_when_all_of_it_has_exited(tmp_path):
    """rosbag record's C++ recorder outlives its Python parent after SIGINT while it writes the
    index: the demo waits for the whole group before it kills anything."""
    import time

    from depth_estimation.tools import demo

    marker = tmp_path / "child_finished"
    child = tmp_path / "child.py"  # like the recorder: ignores SIGINT, needs a while to finish its file
    child.write_text("import signal, time\nsignal.signal(signal.SIGINT, lambda *a: None)\ntime.sleep(1.5)\n"
                     "open(%r, 'w').close()\n" % str(marker))
    parent = tmp_path / "parent.py"  # like `rosbag record`: leaves at once on SIGINT
    parent.write_text("import signal, subprocess, sys\nsubprocess.Popen([sys.executable, %r])\n"
                      "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\nsignal.pause()\n" % str(child))
    procs = demo.Processes(dict(os.environ), str(tmp_path))
    procs.start("parent", [sys.executable, str(parent)])
    time.sleep(1.0)
    procs.stop_all(grace=10.0)
    assert marker.exists(), "the child was killed before it finished"


def test_demo_falls_back_to_the_shipped_student_then_to_random_weights_loudly(hf_cache, capsys, tmp_path,
                                                                             monkeypatch):
    from depth_estimation.models import fastdepth, specs
    from depth_estimation.tools import demo
    folder = str(tmp_path / "fastdepth-duckietown")
    monkeypatch.setitem(specs.SHIPPED, "fastdepth-duckietown", folder)
    assert demo.choose_model(None) == "random:da2-small"  # no folder: nothing trained here
    assert "UNTRAINED" in capsys.readouterr().out
    fastdepth.save_student(fastdepth.random_student(), folder)
    assert demo.choose_model(None) == "fastdepth-duckietown"
    assert "UNTRAINED" not in capsys.readouterr().out
    assert demo.choose_model("random:da2-base") == "random:da2-base"

    monkeypatch.setattr(demo, "simulator_installed", lambda: True)
    parse = demo.build_parser().parse_args
    assert demo.wants_sim(parse([]), "fastdepth-duckietown")  # the student's first demo: its own world
    assert not demo.wants_sim(parse(["--bag", "x.bag"]), "fastdepth-duckietown")  # the recording, asked for
    assert not demo.wants_sim(parse(["--model", "fastdepth-duckietown"]), "fastdepth-duckietown")
    assert not demo.wants_sim(parse([]), "da2-small") and demo.wants_sim(parse(["--sim"]), "da2-small")
    monkeypatch.setattr(demo, "simulator_installed", lambda: False)
    assert not demo.wants_sim(parse([]), "fastdepth-duckietown")  # no simulator: the real recording


def test_evaluate_launch_scores_the_node_like_depth_eval(tiny_dir, tmp_path):
    """evaluate.launch replays real TUM RGB-D frames through depth_node into the evaluator, ends by
    itself, and its JSON agrees with depth-eval run on the same bag and model (same metric code)."""
    from depth_estimation.evaluation import convert_rgbd
    from depth_estimation.evaluation import evaluate
    from depth_estimation.runtime.estimator import DepthEstimator

    tum = os.path.join(ROOT, "assets", "frames")  # the real TUM fr1/desk frames the project ships
    bag, out = str(tmp_path / "tum.bag"), str(tmp_path / "eval.json")
    assert convert_rgbd.main(["rgbd", "--rgb", tum + "/rgb_*.png", "--depth", tum + "/depth/depth_*.png",
                              "--depth-scale", "5000", "--out", bag]) == 0
    port = _free_port()
    env = _ros_env(tmp_path, ROS_MASTER_URI="http://127.0.0.1:%d" % port)
    proc = subprocess.run(["roslaunch", "-p", str(port), "depth_estimation", "evaluate.launch", "bag:=" + bag,
                           "ns:=rgbd", "model:=" + tiny_dir, "input_size:=56", "json:=" + out],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=180)
    assert os.path.exists(out), proc.stdout[-3000:]
    result = json.loads(open(out).read())
    assert result["frames"] == result["expected_frames"] == 2 and not result["partial"]
    assert result["unanswered_ground_truth"] == 0 and result["unscored_predictions"] == []
    assert result["crop"] == "auto:none" and result["align"] == "lsq-disparity"
    offline = evaluate.evaluate(bag, "lsq-disparity", estimator=DepthEstimator(tiny_dir, input_size=56).load())
    for key in ("abs_rel", "rmse", "delta1"):
        assert abs(result["metrics"][key] - offline["metrics"][key]) < 1e-4, key
