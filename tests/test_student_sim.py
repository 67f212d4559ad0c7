"""The shipped student sees: on a few frames of a Duckietown-sim test map rendered here (a map it was
never trained on), its obstacle pixels, in metres through the ground plane alone as the robot gets
them, beat the same network untrained and the road-plane baseline. A broken weights file, config or
loader fails here, not on the robot."""
import os
import shutil

import pytest

pytest.importorskip("gym_duckietown", reason="duckietown-gym-daffy is not installed (requirements.txt)")
if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:
    pytest.skip("no X display and no Xvfb (Debian's xvfb)", allow_module_level=True)

from depth_estimation.evaluation import sim2bag, sim_bench  # noqa: E402
from depth_estimation.models.specs import SHIPPED  # noqa: E402

STUDENT = "fastdepth-duckietown"
MAP, SEED, FRAMES = "robotarium2", 3, 8  # a test map; drive frames with obstacles in the lane


@pytest.fixture(scope="module")
def test_map_bag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("student_sim")
    bag = str(tmp / (MAP + ".bag"))  # the benchmark finds the calibration beside it: calib_<map>/
    argv = ["--out", bag, "--maps", MAP, "--frames", str(FRAMES), "--seed", str(SEED), "--mode", "drive",
            "--episode-frames", "4", "--obstacle-density", "0.5", "--domain-rand", "--jpeg",
            "--calibration-dir", str(tmp / ("calib_" + MAP)), "--no-progress"]
    assert sim2bag.main(argv) == 0
    return bag


def test_the_shipped_student_beats_the_untrained_network_and_the_road_plane(test_map_bag, tmp_path, one_thread):
    assert os.path.isfile(os.path.join(SHIPPED[STUDENT], "model.safetensors"))
    runtime = {"backend": "torch", "device": "cpu", "threads": 1, "input_size": None}
    scores = {}
    for model in (STUDENT, "random:fastdepth-mnv3", sim_bench.ROAD_PLANE):
        run = sim_bench.bench_bag(model, test_map_bag, str(tmp_path), runtime)
        scores[model] = sim_bench.combine([run])["obstacles"]
    # the road plane fits every frame: its obstacle pixels are all there are; the student fits them too
    assert scores[sim_bench.ROAD_PLANE]["obstacle_pixels"] > 1000, scores
    assert scores[STUDENT]["obstacle_pixels"] > 0.8 * scores[sim_bench.ROAD_PLANE]["obstacle_pixels"], scores
    student = scores.pop(STUDENT)["obstacle_abs_rel"]
    # the untrained network rarely gets a confident ground fit; when it does not, it has no score to beat
    others = {m: s["obstacle_abs_rel"] for m, s in scores.items() if s["obstacle_abs_rel"] is not None}
    assert sim_bench.ROAD_PLANE in others and all(student < 0.8 * v for v in others.values()), (student, others)
