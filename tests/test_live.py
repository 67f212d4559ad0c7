"""depth-live end to end: duckietown-sdk's camera against a real DTPS server on localhost.

The server (tests/dtps_camera_server.py, in its own process) is dtps-http's own, run the way a robot's
switchboard does: it creates the queue ``<robot>/sensor/camera/front_center/jpeg`` (the topic
duckietown-sdk's DB21M camera subscribes to) and publishes the shipped recording's real JPEG frame as
CBOR ``duckietown_messages`` ``CompressedImage`` messages (header, format "jpeg", data) at camera rate,
a bounded number of times. Ending that process is a robot going away: its sockets close.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import INCLUDE, ROOT

from depth_estimation.tools import live

pytest.importorskip("duckietown.sdk", reason="duckietown-sdk is not installed (make setup)")
pytest.importorskip("dtps", reason="dtps-http is not installed (make setup)")

SCRIPT = os.path.join(ROOT, "packages", "depth_estimation", "scripts", "depth-live")
SERVER = os.path.join(ROOT, "tests", "dtps_camera_server.py")
ROBOT = "testbot"
TOPIC = (ROBOT, "sensor", "camera", "front_center", "jpeg")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CameraServer:
    """tests/dtps_camera_server.py in its own process, publishing ``frames`` (cycled) ``count`` times at
    ``rate`` Hz; ``close_after``: the process ends after the last frame (the robot went away)."""

    def __init__(self, frames, count, rate=15.0, close_after=False, tmp=None):
        self.port, self.count, self.rate, self.close_after = free_port(), count, rate, close_after
        self.paths = []
        for i, data in enumerate(frames):
            path = os.path.join(str(tmp), "frame%d.jpg" % i)
            with open(path, "wb") as f:
                f.write(data)
            self.paths.append(path)
        self.proc, self.lines = None, []

    def __enter__(self):
        cmd = [sys.executable, SERVER, str(self.port), ROBOT, str(self.count), str(self.rate)] + self.paths
        self.proc = subprocess.Popen(cmd + (["--close-after"] if self.close_after else []),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                         daemon=True).start()
        deadline = time.monotonic() + 30
        while "ready\n" not in self.lines and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "ready\n" in self.lines, "the DTPS camera server did not start (%s)" % self.lines
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(30)

    @property
    def published(self):
        done = [line for line in self.lines if line.startswith("published ")]
        return int(done[0].split()[1]) if done else None


def args_for(port, model, out, *extra):
    return ["--robot", ROBOT, "--host", "127.0.0.1", "--port", str(port), "--model", model,
            "--input-size", "112", "--device", "cpu", "--threads", "1", "--out", str(out), "--no-window",
            "--connect-timeout", "15", "--status-every", "0"] + list(extra)


def check_accounting(report):
    parts = ("frames_out", "frames_dropped", "frames_rejected", "inference_errors")
    assert report["frames_in"] == sum(report[k] for k in parts), report
    assert report["accounted"] is True


def test_live_turns_real_dtps_frames_into_depth(tiny_dir, real_jpeg, tmp_path):
    """The console script, as a user runs it, against the switchboard-like server."""
    truncated = real_jpeg[:len(real_jpeg) // 2]  # as depth_fixtures.bad_frames makes it
    stream = [real_jpeg] * 2 + [truncated]  # every 3rd frame is bad: rejected and counted, never a crash
    out = tmp_path / "live"
    env = dict(os.environ, PYTHONPATH=INCLUDE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with CameraServer(stream, count=400, rate=6.0, tmp=tmp_path) as server:
        cmd = [sys.executable, SCRIPT] + args_for(server.port, tiny_dir, out, "--frames", "24")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    check_accounting(report)
    assert report["frames_in"] == 24 and report["error"] is None
    assert report["frames_out"] >= 5, report
    assert report["frames_rejected"] >= 1 and set(report["rejected_kinds"]) == {"truncated"}, report
    assert report["latency_ms"]["count"] == report["frames_out"] and report["latency_ms"]["p95"] > 0
    assert report["source"] == "DTPS http://127.0.0.1:%d/ %s" % (server.port, "/".join(TOPIC))
    assert os.path.getsize(out / "live.avi") > 1000
    line = [x for x in proc.stdout.splitlines() if x.startswith("depth-live: ")][-1]
    assert "24 frames in, %d depth frames out, %d dropped, %d rejected" % (
        report["frames_out"], report["frames_dropped"], report["frames_rejected"]) in line
    assert "latency p50" in line and "p95" in line


def test_a_server_going_away_is_a_clear_error_not_a_hang(tiny_dir, real_jpeg, tmp_path, capsys):
    with CameraServer([real_jpeg], count=8, rate=10.0, close_after=True, tmp=tmp_path) as server:
        started = time.monotonic()
        code = live.main(args_for(server.port, tiny_dir, tmp_path, "--frame-timeout", "2"))
        took = time.monotonic() - started
    assert server.proc.returncode == 0 and server.published == 8
    assert code == live.EXIT_CAMERA and took < 60
    err = capsys.readouterr().err
    assert "the camera stream stopped" in err and "the server is gone" in err, err
    report = json.loads((tmp_path / "report.json").read_text())
    check_accounting(report)
    assert 1 <= report["frames_in"] <= 8 and report["frames_out"] >= 1
    assert report["stopped"] == "camera error" and "stream stopped" in report["error"]


def test_no_server_is_a_clear_error_at_once(tiny_dir, tmp_path, capsys):
    started = time.monotonic()
    code = live.main(args_for(free_port(), tiny_dir, tmp_path))
    assert code == live.EXIT_CAMERA and time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "cannot reach robot %s's DTPS switchboard" % ROBOT in err and "nothing answers" in err, err
    assert json.loads((tmp_path / "report.json").read_text())["frames_in"] == 0


def test_bad_options_and_parameters(tmp_path, capsys):
    with pytest.raises(SystemExit):
        live.parse_args([])  # neither --robot nor --sim
    assert live.parse_args(["--sim"]).robot == "map_0/vehicle_0"
    config = tmp_path / "bad.yaml"
    config.write_text("jpeg_quality: 500\n")
    assert live.main(["--robot", ROBOT, "--config", str(config)]) == live.EXIT_PARAMS
    assert "jpeg_quality" in capsys.readouterr().err


class BurstCamera:
    """A camera that delivers ``count`` frames at once, before the model has taken any."""

    def __init__(self, data, count):
        self.data, self.count = data, count

    def start(self, on_frame):
        for _ in range(self.count):
            on_frame(self.data, "jpeg")

    def stop(self):
        pass

    def describe(self):
        return "burst"

    def diagnose(self):
        return "n/a"


def test_a_busy_model_drops_frames_instead_of_queueing_them(tiny_dir, real_jpeg, tmp_path):
    args = live.parse_args(args_for(1, tiny_dir, tmp_path, "--frames", "10"))
    assert live.run(args, camera=BurstCamera(real_jpeg, 10)) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    check_accounting(report)
    assert (report["frames_in"], report["frames_out"], report["frames_dropped"]) == (10, 1, 9), report


def test_the_student_runs_at_its_own_size_unless_told(real_jpeg, tmp_path, capsys):
    """--help says 0 (the model's own size, 192 for the student) is the default for other models than
    Depth-Anything-V2: the run says and uses that, not default.yaml's Depth-Anything-V2 308 (-> 320)."""
    from depth_estimation.models.fastdepth import random_student, save_student

    student = save_student(random_student(seed=3), str(tmp_path / "student"))
    for extra, side in (([], "192"), (["--input-size", "256"], "256")):
        argv = ["--robot", ROBOT, "--model", student, "--device", "cpu", "--threads", "1", "--out",
                str(tmp_path / ("out" + side)), "--no-window", "--frames", "2", "--status-every", "0"] + extra
        assert live.run(live.parse_args(argv), camera=BurstCamera(real_jpeg, 2)) == 0
        assert "input short side %s)" % side in capsys.readouterr().out
    assert live.load_params(None, {"model": "random:da2-small"})["input_size"] == 308
