"""The robot's launchers and the node's console (issue 17): the node's own exit code reaches its launcher
(roslaunch exits 0 for it) and code 3 restarts it, the one-shot engine build exits with the builder's
code, and the library's log lines reach the node's console and /rosout.

The launchers run as they are, with ``source /environment.sh`` pointed at a stand-in of Duckietown's
(dt-commons, daffy: ``dt-launchfile-init`` registers SIGINT/SIGTERM traps that send SIGINT to the
children and turns on ``set -e``, ``dt-exec`` runs its command in the background, ``dt-launchfile-join``
waits for every child, then sleeps and announces the end; it always returns 0 and leaves ``set -e``
on); ``roslaunch`` is a stand-in that, like the real one with a required node (checked below on a
real master), runs the node and exits 0 whatever the node's code."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import INCLUDE, ROOT
from test_node_lifecycle import master  # noqa: F401 - the fixture: roscore on a free port
from test_tensorrt_cache import jetson  # noqa: F401 - the fake TensorRT's fixture
from test_tensorrt_robot import twice_onnx  # noqa: F401 - an ONNX file computing what the fake engines do

LAUNCHERS = os.path.join(ROOT, "launchers")

ENVIRONMENT = """
# stand-in of dt-commons' /environment.sh launcher functions (daffy)
dt-terminate() { kill -INT $(pgrep -P $$) 2>/dev/null; }
dt-register-signals() { trap dt-terminate SIGINT; trap dt-terminate SIGTERM; }
dt-launchfile-init() { set -e; dt-register-signals; echo "==> Launching app..."; %s }
dt-join() { set +e; wait &>/dev/null; set -e; }
dt-launchfile-join() { dt-join; sleep 0.5; printf "<== App terminated!\\n"; }
dt-exec() { eval "${*%%&} &"; }
"""

# roslaunch with a required node: the node runs, roslaunch exits 0 whatever the node's code
ROSLAUNCH = """#!/bin/bash
echo "roslaunch $*" >> "$STANDIN_LOG"
"$STANDIN_PYTHON" "$STANDIN_NODE"
exit 0
"""

# the node's exit path (framepath.launcher.exit_now, as depth_node.py leaves), with the next code of a list
NODE = """import sys
sys.path.insert(0, %r)
from depth_estimation.framepath.launcher import exit_now
with open(%r) as f:
    codes = f.read().split()
with open(%r, "w") as f:
    f.write(" ".join(codes[1:]))
print("node: exiting with code", codes[0], flush=True)
exit_now(int(codes[0]))
"""


def run_launcher(tmp_path, name, codes=(), strict=True, env=None, timeout=60):
    """Run launchers/NAME with the stand-ins; (exit code, output, roslaunch calls)."""
    environment = tmp_path / "environment.sh"
    environment.write_text(ENVIRONMENT % ("" if strict else "set +e;"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    roslaunch = bin_dir / "roslaunch"
    roslaunch.write_text(ROSLAUNCH)
    roslaunch.chmod(0o755)
    (tmp_path / "codes").write_text(" ".join(str(c) for c in codes))
    (tmp_path / "node.py").write_text(NODE % (INCLUDE, str(tmp_path / "codes"), str(tmp_path / "codes")))
    with open(os.path.join(LAUNCHERS, name)) as f:
        script = f.read()
    assert script.count("source /environment.sh") == 1
    launcher = tmp_path / name
    launcher.write_text(script.replace("source /environment.sh", "source %s" % environment))
    full_env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), STANDIN_LOG=str(tmp_path / "log"),
                    STANDIN_PYTHON=sys.executable, STANDIN_NODE=str(tmp_path / "node.py"),
                    VEHICLE_NAME="duckie", DEPTH_MODEL="/data/model.onnx", DEPTH_BACKEND="tensorrt",
                    DEPTH_NODE_EXIT_FILE=str(tmp_path / "exit_code"), PYTHONPATH=INCLUDE)
    full_env.update(env or {})
    proc = subprocess.run(["bash", str(launcher)], env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout)
    log = tmp_path / "log"
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, proc.stdout, calls


@pytest.mark.parametrize("strict", [True, False], ids=["set -e kept", "set +e"])
@pytest.mark.parametrize("codes, runs, final", [
    ((3, 0), 2, 0),  # the master restarted once: the node starts again, then ends normally
    ((3, 3, 1), 3, 1),  # restarted twice, then a failure: the container ends with it
    ((2,), 1, 2),  # a bad parameter: no restart, the node's own code
    ((1,), 1, 1),
])
def test_the_launcher_learns_the_nodes_code_and_restarts_on_3_only(tmp_path, codes, runs, final, strict):
    code, output, calls = run_launcher(tmp_path, "depth-estimation.sh", codes, strict=strict)
    assert code == final, output
    assert len(calls) == runs, output
    assert calls[0] == ("roslaunch --wait depth_estimation depth_node.launch veh:=duckie "
                        "model:=/data/model.onnx backend:=tensorrt")
    assert output.count("starting it again") == runs - 1


def test_a_node_that_leaves_no_code_ends_the_launcher_with_1(tmp_path):
    code, output, calls = run_launcher(tmp_path, "depth-estimation.sh", codes=())  # the node dies at once
    assert code == 1 and len(calls) == 1 and "left no exit code" in output, output


def test_the_one_shot_build_exits_with_the_builders_code(tmp_path):
    """No TensorRT here: the builder says so in one line and the launcher (and container) exits 1,
    not dt-launchfile-join's 0."""
    code, output, _calls = run_launcher(tmp_path, "build-engine.sh", env={"DEPTH_MODEL": str(tmp_path / "m.onnx")})
    lines = [ln for ln in output.splitlines() if ln.startswith("build_engine:")]
    assert code == 1 and len(lines) == 1 and "tensorrt" in lines[0], output


def test_build_engine_tool(jetson, twice_onnx, tmp_path, monkeypatch, capsys, caplog):
    """The one-shot build: engine, sidecar and the self-check against ONNX Runtime, as the node's."""
    from depth_estimation.runtime import tensorrt_build
    from depth_estimation.tools import build_engine

    jetson("7.1")
    engines = str(tmp_path / "engines")
    assert build_engine.main(["--model", twice_onnx, "--engine-dir", engines]) == 0
    out = capsys.readouterr().out
    assert "ready (fp16" in out and engines in out and len(os.listdir(engines)) == 2  # engine + sidecar
    assert "matches ONNX Runtime" in caplog.text
    monkeypatch.setattr(tensorrt_build, "available_mb", lambda: 300.0)
    assert build_engine.main(["--model", twice_onnx, "--engine-dir", str(tmp_path / "e2")]) == 1
    assert "only 300 MB are available" in capsys.readouterr().err
    assert build_engine.main(["--model", twice_onnx, "--engine-dir", str(tmp_path / "e2"), "--fp32",
                              "--no-memory-check"]) == 0


def test_real_roslaunch_exits_0_for_a_required_node_and_the_node_records_its_code(master, tmp_path):  # noqa: F811
    """The premise: roslaunch returns 0 when its required node fails (here the real node with a bad
    parameter, exit code 2); the code reaches the launcher only through $DEPTH_NODE_EXIT_FILE."""
    exit_file = tmp_path / "exit_code"
    env = dict(master.env, DEPTH_NODE_EXIT_FILE=str(exit_file))
    proc = subprocess.run(["roslaunch", "depth_estimation", "depth_node.launch", "veh:=t", "input_size:=-3"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=120)
    assert "[FATAL]" in proc.stdout and "~input_size" in proc.stdout, proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert exit_file.read_text() == "2\n"


def test_library_warnings_reach_the_console_and_rosout(master, tmp_path, tiny_dir):  # noqa: F811
    """A library warning (an input size that is no multiple of 14) on the node's console, from the
    node, and in /rosout (the master's rosout.log); before, it went to the node's log file only."""
    log = tmp_path / "node.log"
    proc = master.node("model:=" + tiny_dir, "input_size:=50", log=log)
    try:
        deadline = time.time() + 120
        while "listening on" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        text = "input size 50 is no multiple of 14"
        console = [ln for ln in log.read_text().splitlines() if text in ln]
        assert len(console) == 1 and console[0].startswith("[WARN]"), log.read_text()[-3000:]
        rosout = tmp_path / "ros_home" / "log" / "latest" / "rosout.log"
        deadline = time.time() + 20
        while not (rosout.exists() and text in rosout.read_text()):
            assert time.time() < deadline, "not in /rosout"
            time.sleep(0.2)
        assert "/t/depth_node" in [ln for ln in rosout.read_text().splitlines() if text in ln][0]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
