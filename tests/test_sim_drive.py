"""depth-sim-drive (issue 20.3): the closed loop in Duckietown's simulator, headless and short. The
report's fields come from the run: the oracle (exact depth through the node's metric path) stops at the
offset before contact; the untrained network does not (it stops falsely, far from the obstacle, or
drives into it); the summary is computed from the runs' records."""
import json
import os
import shutil

import pytest

from depth_estimation.evaluation import sim_drive_report as report

SHORT = ["--runs", "1", "--width", "320", "--height", "240", "--approach-m", "0.8",
         "--obstacle-factor", "1.0"]


def _sim():
    pytest.importorskip("gym_duckietown", reason="duckietown-gym-daffy is not installed (requirements.txt)")
    if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:
        pytest.skip("no X display and no Xvfb (Debian's xvfb)")
    from depth_estimation.evaluation import sim_drive

    return sim_drive


def test_the_oracle_stops_at_the_offset_before_contact(tmp_path):
    sim_drive = _sim()
    out, video = str(tmp_path / "o.json"), str(tmp_path / "o.mp4")
    argv = ["--model", "oracle", "--max-seconds", "20", "--json", out, "--video", video] + SHORT
    assert sim_drive.main(argv) == 0
    result = json.loads(open(out).read())
    (run,), s = result["runs"], result["summary"]
    assert run["outcome"] == "stopped" and run["false_stops"] == 0 and run["frames"] > 20
    assert abs(run["stop_distance_m"] - 0.25) <= 0.05 and run["stop_distance_error_m"] == pytest.approx(
        run["stop_distance_m"] - 0.25)
    assert (s["approaches"], s["stopped_before_contact"], s["contacts"]) == (1, 1, 0)
    assert s["rate_hz"] == pytest.approx(run["frames"] / run["sim_seconds"])
    assert os.path.getsize(video) > 1000


def test_the_untrained_network_does_not_stop_at_the_obstacle(tmp_path):
    sim_drive = _sim()
    out = str(tmp_path / "r.json")
    argv = ["--model", "random:fastdepth-mnv3", "--max-seconds", "8", "--json", out] + SHORT
    assert sim_drive.main(argv) == 0
    s = json.loads(open(out).read())["summary"]
    assert s["stopped_before_contact"] == 0 and (s["false_stops"] > 0 or s["contacts"] > 0), s


def test_a_clear_lane_run_places_nothing_and_measures_the_lane(tmp_path):
    """--obstacle none: the same lane pose with nothing placed; the run drives until --max-seconds
    (outcome clear), is no approach, and its metres are clear lane (the oracle stops for nothing)."""
    sim_drive = _sim()
    out = str(tmp_path / "c.json")
    argv = ["--model", "oracle", "--obstacle", "none", "--max-seconds", "6", "--json", out] + SHORT
    assert sim_drive.main(argv) == 0
    result = json.loads(open(out).read())
    (run,), s = result["runs"], result["summary"]
    assert run["outcome"] == "clear" and run["obstacle"] == "none" and run["stops"] == 0, run
    assert run["clear_lane_m"] > 0.8 and run["first_detected_at_m"] is None, run  # 6 s at 0.19 m/s
    assert (s["approaches"], s["stopped_share"], s["false_stops_per_100m"]) == (0, None, 0.0), s
    assert s["clear_lane_m"] == pytest.approx(run["clear_lane_m"])


def _run(outcome, error, false, clear, frames, seconds):
    return {"outcome": outcome, "stop_distance_error_m": error, "false_stops": false, "clear_lane_m": clear,
            "frames": frames, "sim_seconds": seconds}


def test_the_summary_is_computed_from_the_runs():
    runs = [_run("stopped", 0.02, 0, 30.0, 100, 10.0), _run("stopped", -0.04, 1, 20.0, 50, 10.0),
            _run("contact", None, 0, 50.0, 50, 5.0), _run("stopped", 0.08, 0, 0.0, 0, 0.0)]
    s = report.build({}, runs)["summary"]
    assert (s["approaches"], s["stopped_before_contact"], s["contacts"], s["timeouts"]) == (4, 3, 1, 0)
    assert s["stop_distance_error_m_median"] == pytest.approx(0.02) and s["stop_distance_within_5cm"] == 2
    assert s["false_stops_per_100m"] == pytest.approx(1.0) and s["rate_hz"] == pytest.approx(200 / 25.0)
    clear = dict(_run("clear", None, 2, 100.0, 300, 30.0), obstacle="none")  # a clear-lane run: no approach
    s = report.build({}, runs + [clear])["summary"]
    assert (s["approaches"], s["stopped_before_contact"], s["stopped_share"]) == (4, 3, 0.75)
    assert s["false_stops_per_100m"] == pytest.approx(100.0 * 3 / 200.0)
