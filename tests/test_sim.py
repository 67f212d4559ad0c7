"""depth-sim2bag renders Duckietown's simulator into RGB-D bags whose depth, calibration files and
obstacle ground truth agree with each other and with the simulator's own camera: checked here on a
few small frames, headless (the tool starts its own Xvfb), independently of the writer's code where
it matters (the simulator's camera values are read from a fresh simulator; depth from the bag; the
plane from the written files through the project's ``geometry``)."""
import glob
import json
import math
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("gym_duckietown", reason="duckietown-gym-daffy is not installed (requirements.txt)")
if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:
    pytest.skip("no X display and no Xvfb (Debian's xvfb)", allow_module_level=True)

from depth_estimation.evaluation import evaluate, sim2bag, sim_display  # noqa: E402
from depth_estimation.geometry.calibration import ground_plane, read_extrinsics  # noqa: E402
from depth_estimation.geometry.camera import read_intrinsics  # noqa: E402
from depth_estimation.geometry.ground import ground_depth_map  # noqa: E402
from depth_estimation.io.bags import iter_messages, obstacle_topics, rgbd_topics  # noqa: E402

# the simulator's own first render (in its constructor) passes numpy arrays to OpenGL
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
W, H = 320, 240
MAP, SEED, FRAMES = "loop_obstacles", 7, 6
SCALE, SHIFT = 0.37, 0.8  # the oracle's unknown affine map of true disparity (1/m)


def _render(tmp, name, *extra):
    out, calib = str(tmp / (name + ".bag")), str(tmp / ("calib_" + name))
    argv = ["--out", out, "--maps", MAP, "--frames", str(FRAMES), "--seed", str(SEED), "--width", str(W),
            "--height", str(H), "--calibration-dir", calib, "--no-progress"] + list(extra)
    assert sim2bag.main(argv) == 0
    return out, calib


def _read(bag):
    """Per topic suffix, the bag's messages in order."""
    image, depth, info = rgbd_topics("simbot")
    obstacle, mask = obstacle_topics("simbot")
    names = {image: "image", depth: "depth", info: "info", obstacle: "obstacle", mask: "mask"}
    out = {k: [] for k in names.values()}
    for topic, _t, msg in iter_messages(bag):
        if topic in names:
            out[names[topic]].append(msg)
    return out


def _depth(msg):
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    return {"nominal": _render(tmp, "nominal"), "again": _render(tmp, "again"),
            "rand": _render(tmp, "rand", "--domain-rand", "--mode", "random"),
            "lens": _render(tmp, "lens", "--domain-rand", "--distortion", "--mode", "mixed", "--episode-frames", "3")}


def _simulator_camera(domain_rand):
    """The simulator's own camera for the bag's first map and seed (a fresh simulator, not the writer's)."""
    simulator = sim_display.import_simulator()
    sim = simulator.Simulator(map_name=MAP, seed=SEED * 1000, domain_rand=domain_rand, camera_width=W,
                              camera_height=H)
    return (float(np.asarray(sim.cam_height).reshape(-1)[0]), float(np.asarray(sim.cam_angle[0]).reshape(-1)[0]))


def _plane_depth(calib):
    intrinsics = read_intrinsics(os.path.join(calib, "camera_intrinsic", "simbot.yaml"))
    plane = ground_plane(read_extrinsics(os.path.join(calib, "camera_extrinsic", "simbot.yaml")), intrinsics)
    return plane, intrinsics, ground_depth_map(plane, intrinsics, H, W)


@pytest.mark.parametrize("case, share", [("nominal", 1.0), ("rand", 1.0), ("lens", 0.98)])
def test_road_depth_is_the_plane_of_the_written_extrinsic_file(rendered, case, share):
    bag, calib = rendered[case]
    _plane, _intr, plane_depth = _plane_depth(calib)
    msgs = _read(bag)
    assert len(msgs["depth"]) == FRAMES and len(msgs["mask"]) == FRAMES and len(msgs["obstacle"]) == FRAMES
    for msg in msgs["depth"]:
        depth = _depth(msg)
        bottom = slice(2 * H // 3, H)  # the road right in front of the robot
        d, g = depth[bottom], plane_depth[bottom]
        rel = np.abs(d - g) / g
        assert np.all(d > 0)
        # every pixel, or with the lens all but the few where the bottom third meets an object's edge
        assert np.mean(rel <= 1e-3) >= share and np.median(rel) < 1e-4, (case, np.percentile(rel, [50, 99, 100]))


@pytest.mark.parametrize("case, domain_rand", [("nominal", False), ("rand", True), ("lens", True)])
def test_geometry_reads_the_files_back_to_the_simulator_camera(rendered, case, domain_rand):
    height, tilt = _simulator_camera(domain_rand)
    plane, intrinsics, _ = _plane_depth(rendered[case][1])
    assert abs(plane.height_m - height) < 1e-3 and abs(plane.pitch_deg - tilt) < 0.05, (plane, height, tilt)
    assert abs(plane.roll_deg) < 0.05
    info = _read(rendered[case][0])["info"][0]
    assert (info.width, info.height) == (W, H)
    assert np.allclose(info.K, intrinsics.K.reshape(-1)) and np.allclose(info.D, intrinsics.D)
    assert any(abs(v) > 0 for v in intrinsics.D) == (case == "lens")
    if domain_rand:  # a randomized robot is not the nominal one
        assert abs(height - 0.108) > 1e-5 or abs(tilt - 19.15) > 1e-4


def test_one_seed_gives_one_bag(rendered):
    with open(rendered["nominal"][0], "rb") as a, open(rendered["again"][0], "rb") as b:
        assert a.read() == b.read()


def test_mask_and_obstacle_distance_follow_the_depth(rendered):
    bag, calib = rendered["lens"]
    plane, intrinsics, plane_depth = _plane_depth(calib)
    msgs = _read(bag)
    for depth_msg, mask_msg, obstacle in zip(msgs["depth"], msgs["mask"], msgs["obstacle"]):
        depth = _depth(depth_msg)
        mask = np.frombuffer(bytes(mask_msg.data), np.uint8).reshape(H, W)
        assert set(np.unique(mask)) <= {0, 255} and mask_msg.encoding == "mono8"
        on_road = (mask == 0) & (depth > 0) & np.isfinite(plane_depth)
        # off the objects, everything seen is on the ground plane (to the lens' resampling)
        assert np.median(np.abs(depth[on_road] - plane_depth[on_road]) / plane_depth[on_road]) < 1e-3
        if mask.any():  # objects stand in front of the ground the plane would give there
            hidden = (mask > 0) & np.isfinite(plane_depth)
            assert np.mean(depth[hidden] < plane_depth[hidden] * 0.999) > 0.9
        assert obstacle.range == math.inf or 0.0 < obstacle.range <= obstacle.max_range
        assert obstacle.header.frame_id == "simbot/footprint"


def test_oracle_through_depth_eval_ground_alignment(rendered, tmp_path):
    bag, calib = rendered["rand"]
    result = _ground_eval(bag, os.path.join(calib, "camera_extrinsic", "simbot.yaml"),
                          _oracle(bag, tmp_path / "pred"), tmp_path / "eval.json")
    assert result["frames"] == FRAMES and result["dataset"] == sim2bag.SIM_DATASET
    assert result["metrics"]["abs_rel"] <= 0.03, result["metrics"]


def test_no_display_and_no_xvfb_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(sim_display, "_server", None)
    monkeypatch.setattr(sim_display.shutil, "which", lambda name: None)
    assert sim2bag.main(["--out", str(tmp_path / "x.bag"), "--maps", MAP, "--frames", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install xvfb" in err[0], err
    assert not (tmp_path / "x.bag").exists()


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert sim2bag.main(["--out", str(tmp_path / "x.bag"), "--maps", "no_such_map", "--frames", "2",
                         "--no-progress"]) == 1
    assert "no_such_map" in capsys.readouterr().err
    assert sim2bag.main(["--out", str(tmp_path / "x.bag"), "--maps", "a,b,c", "--frames", "2"]) == 1
    assert "fewer than one frame per map" in capsys.readouterr().err
    assert not (tmp_path / "x.bag").exists()


# --- obstacles: added to a map, and the benchmark's obstacle metrics ---------------------------------

@pytest.fixture(scope="module")
def obstacle_bag(tmp_path_factory):
    """A drive on loop_empty with obstacles added in its lanes (most frames see one ahead, some none)."""
    tmp = tmp_path_factory.mktemp("obstacles")
    out, calib = str(tmp / "loop_empty.bag"), str(tmp / "calib_loop_empty")
    assert sim2bag.main(["--out", out, "--maps", "loop_empty", "--frames", "12", "--seed", "1", "--width", str(W),
                         "--height", str(H), "--episode-frames", "4", "--obstacle-density", "1", "--domain-rand",
                         "--calibration-dir", calib, "--no-progress"]) == 0
    return out, os.path.join(calib, "camera_extrinsic", "simbot.yaml")


def _ranges(bag):
    return [msg.range for msg in _read(bag)["obstacle"]]


def test_obstacle_density_adds_obstacles_in_the_lanes(obstacle_bag, tmp_path):
    ahead = [r for r in _ranges(obstacle_bag[0]) if math.isfinite(r)]
    assert 3 <= len(ahead) < FRAMES * 2 and all(0.05 < r <= 2.0 for r in ahead), ahead
    plain = str(tmp_path / "plain.bag")  # the same drive without them: the map has nothing in its lanes
    assert sim2bag.main(["--out", plain, "--maps", "loop_empty", "--frames", "12", "--seed", "1", "--width",
                         str(W), "--height", str(H), "--episode-frames", "4", "--domain-rand", "--no-progress"]) == 0
    assert sum(math.isfinite(r) for r in _ranges(plain)) < len(ahead)


def _oracle(bag, folder):
    folder.mkdir()
    for k, msg in enumerate(_read(bag)["depth"]):
        depth = _depth(msg)
        with np.errstate(divide="ignore"):
            disparity = np.where(depth > 0, 1.0 / depth, np.nan)
        np.save(str(folder / ("%06d.npy" % k)), (SCALE * disparity + SHIFT).astype(np.float32))
    return str(folder)


def _ground_eval(bag, extrinsics, preds, out):
    assert evaluate.main(["--bag", bag, "--predictions", preds, "--align", "ground", "--extrinsics", extrinsics,
                          "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_obstacle_metrics_of_the_oracle_and_of_the_road_plane(obstacle_bag, tmp_path, capsys):
    from depth_estimation.evaluation import sim_bench

    bag, extrinsics = obstacle_bag
    oracle = _ground_eval(bag, extrinsics, _oracle(bag, tmp_path / "oracle"), tmp_path / "oracle.json")
    o = oracle["obstacles"]
    assert "obstacle pixels" in capsys.readouterr().out
    assert o["obstacle_pixels"] > 1000 and o["obstacle_abs_rel"] < 0.03 and o["obstacle_delta1"] > 0.97, o
    assert o["obstacle_frames"] >= 3 and o["distance_within_10pct"] >= 0.8 and o["false_alarms"] == 0, o
    assert o["distance_median_abs_error_m"] < 0.05 and o["detection_rate_1m"] in (None, 1.0), o
    plane_dir = tmp_path / "plane"
    assert sim_bench.road_plane_predictions(bag, extrinsics, str(plane_dir)) == 12
    plane = _ground_eval(bag, extrinsics, str(plane_dir), tmp_path / "plane.json")
    p = plane["obstacles"]
    # the road fills the frame: fine on full frames, blind to every obstacle
    assert plane["metrics"]["abs_rel"] < 0.15 and p["obstacle_abs_rel"] > 0.2, (plane["metrics"], p)
    assert p["distance_within_10pct"] == 0.0 and p["distance_median_abs_error_m"] is None, p


def test_obstacle_summary_definitions():
    from depth_estimation.evaluation.obstacle_eval import summarize

    records = [{"obstacle_gt_m": 0.5, "obstacle_pred_m": 0.52, "obstacle_pixels": 10, "obstacle_abs_rel_sum": 1.0,
                "obstacle_delta1_hits": 9},
               {"obstacle_gt_m": 0.8, "obstacle_pred_m": None, "obstacle_pixels": 0},  # missed, near
               {"obstacle_gt_m": 1.5, "obstacle_pred_m": 1.8},  # seen, 20 % off
               {"obstacle_gt_m": None, "obstacle_pred_m": 0.9},  # false alarm
               {"obstacle_gt_m": None, "obstacle_pred_m": None}]
    s = summarize(records)
    assert s["obstacle_pixels"] == 10 and s["obstacle_abs_rel"] == 0.1 and s["obstacle_delta1"] == 0.9
    assert s["obstacle_frames"] == 3 and s["distance_median_abs_error_m"] == pytest.approx(0.16)
    assert s["distance_within_10pct"] == pytest.approx(1 / 3.0) and s["detection_rate_1m"] == 0.5
    assert (s["false_alarms"], s["free_frames"], s["false_alarm_rate"]) == (1, 2, 0.5)


def test_ground_truth_labels_keep_the_obstacle_mask_for_the_weighted_loss(obstacle_bag, tmp_path):
    """depth-distill label caches each frame's obstacle mask beside its label (depth-distill train
    --obstacle-weight reads it), adds it to items labelled before masks were cached, and the dataset
    weighs exactly those pixels."""
    import cv2

    from depth_estimation.distill import cli as distill
    from depth_estimation.distill import data, label_cache

    bag = obstacle_bag[0]
    cache = str(tmp_path / "gt")
    label = ["label", "--teacher", "ground-truth", "--bags", bag, "--cache", cache, "--label-size", "120",
             "--no-progress"]
    assert distill.main(label) == 0
    masks = [np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.step)[:, :m.width] > 0
             for m in _read(bag)["mask"]]
    entries = list(label_cache.iter_cache(cache))
    assert len(entries) == 12 and sum(m.any() for m in masks) >= 3
    shares = {}
    for entry in entries:
        share = shares[entry["key"]] = label_cache.load_obstacles(cache, entry)
        h, w = entry["label_hw"]
        truth = cv2.resize(masks[int(entry["source"].rsplit(":", 1)[1])].astype(np.uint8), (w, h),
                           interpolation=cv2.INTER_NEAREST) > 0
        assert share.shape == (h, w) and ((share > 0.5) == truth).mean() > 0.97
    for path in glob.glob(os.path.join(cache, "items", "*", "*" + label_cache.OBSTACLES)):
        os.remove(path)  # a cache labelled before masks were cached
    assert all(label_cache.load_obstacles(cache, e) is None for e in entries)
    assert distill.main(label) == 0
    assert all(np.array_equal(label_cache.load_obstacles(cache, e), shares[e["key"]]) for e in entries)
    weighted = data.DistillDataset(cache, [e["key"] for e in entries], train=False, size=(96, 128),
                                   obstacle_weight=5.0)
    heavy = 0
    for i, entry in enumerate(entries):
        _x, y, weight = weighted[i]
        share = cv2.resize(shares[entry["key"]], (128, 96), interpolation=cv2.INTER_AREA)  # aspect 4:3 kept
        valid = weight.numpy() > 0
        assert np.allclose(weight.numpy()[valid], 1.0 + 4.0 * share[valid], atol=1e-5)
        heavy += int((weight.numpy() > 3).sum())
    assert heavy > 100


def test_demo_compares_the_node_outputs_with_the_ground_truth(obstacle_bag, tmp_path):
    """demo --sim's comparison, on node outputs made from the ground truth itself: 15 % too far everywhere
    gives AbsRel 0.15 and every distance 15 % off; a frame in state NONE (depth, nothing metric) is a
    frame without output."""
    from depth_estimation.io.bags import DEPTH_TYPE, INFO_TYPE, RANGE_TYPE, MessageBuilder, write_bag
    from depth_estimation.tools import demo_sim

    bag = obstacle_bag[0]
    msgs = _read(bag)
    depth_topic, range_topic = demo_sim.recorded_topics("simbot")
    build, outputs = MessageBuilder(), str(tmp_path / "outputs.bag")
    info_topic = "/simbot/depth_node/depth/camera_info"
    topics = [(depth_topic, DEPTH_TYPE), (range_topic, RANGE_TYPE), (info_topic, INFO_TYPE)]
    with write_bag(outputs, topics, build.store) as write:
        for k, (depth_msg, obstacle) in enumerate(zip(msgs["depth"], msgs["obstacle"])):
            stamp = depth_msg.header.stamp.sec * 10 ** 9 + depth_msg.header.stamp.nanosec
            depth = _depth(depth_msg)
            write(info_topic, stamp, msgs["info"][k])
            if k == 0:
                continue  # state NONE: depth but nothing metric
            write(depth_topic, stamp, build.depth_image(depth_msg.header, np.where(depth > 0, 1.15 * depth, np.nan)))
            write(range_topic, stamp, build.range(obstacle.header, 1.15 * obstacle.range, 0.1, 0.0, 2.0))
    section, frame = demo_sim.compare(outputs, bag, "simbot")
    n = len(msgs["depth"])
    assert section["metric_depth_frames"] == n - 1 and abs(section["metric_depth"]["abs_rel"] - 0.15) < 1e-3
    o = section["obstacle_distance"]
    assert section["obstacle_distance_frames_without_output"] == 1 and o["distance_frames"] == n - 1
    assert o["distance_within_10pct"] == 0.0 and o["false_alarms"] == 0, o
    assert abs(o["distance_median_abs_error_m"] / 0.15 - np.median([r for r in _ranges(bag)[1:] if r < 9])) < 0.01
    montage = str(tmp_path / "montage.png")
    assert frame is not None and demo_sim.write_montage(bag, "simbot", frame, "oracle", montage)
    import cv2

    assert cv2.imread(montage).shape[1] == 3 * 426


def test_the_evaluator_nodes_obstacle_scorer_pairs_by_stamp_in_any_order(obstacle_bag):
    """evaluate.launch metric:=true: the evaluator feeds ~depth/metric, ~obstacle_distance and the ground
    truth as they arrive (any order) to StreamScorer; the oracle (ground truth itself) scores perfectly
    and a frame without a distance (state NONE) is counted apart."""
    from depth_estimation.evaluation.obstacle_eval import ObstacleTruth, StreamScorer

    bag = obstacle_bag[0]
    msgs = _read(bag)
    truth = ObstacleTruth.from_bag(bag, rgbd_topics("simbot")[1])
    scorer = StreamScorer(truth, (1e-3, 10.0))
    stamps = [m.header.stamp.sec * 10 ** 9 + m.header.stamp.nanosec for m in msgs["depth"]]
    for k, (stamp, depth_msg, obstacle) in enumerate(zip(stamps, msgs["depth"], msgs["obstacle"])):
        depth = _depth(depth_msg).copy()
        if k % 2:  # the node's output first, then the ground truth
            scorer.metric_depth(stamp, np.where(depth > 0, depth, np.nan))
            scorer.ground_truth(stamp, depth)
        else:
            scorer.ground_truth(stamp, depth)
            scorer.metric_depth(stamp, np.where(depth > 0, depth, np.nan))
        if k != 3:  # frame 3: the node in state NONE, no distance
            scorer.distance(stamp, obstacle.range)
    s = scorer.summary(len(stamps))
    assert s["frames_without_output"] == 1 and s["distance_frames"] == len(stamps) - 1
    assert s["obstacle_pixels"] > 1000 and s["obstacle_abs_rel"] == 0.0 and s["obstacle_delta1"] == 1.0
    assert s["distance_median_abs_error_m"] == 0.0 and s["false_alarms"] == 0
    assert not scorer.depths and not scorer.gts  # every pair scored, nothing left waiting


def test_evaluate_launch_scores_the_nodes_metric_outputs_on_obstacles(obstacle_bag, tmp_path):
    """evaluate.launch metric:=true on a simulated bag: the node runs with the simulated robot's extrinsic
    file, and the evaluator's JSON holds the obstacle metrics of its ~depth/metric and ~obstacle_distance
    (every ground-truth frame answered: a distance, or NaN counted as no output)."""
    import socket
    import subprocess

    if shutil.which("roslaunch") is None or not os.environ.get("ROS_PACKAGE_PATH"):
        pytest.fail("ROS environment missing: run through `make test` (or `source env.sh` first)")
    bag, extrinsics = obstacle_bag
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, ROS_HOME=str(tmp_path / "ros_home"), ROS_MASTER_URI="http://127.0.0.1:%d" % port)
    out = str(tmp_path / "eval.json")
    proc = subprocess.run(["roslaunch", "-p", str(port), "depth_estimation", "evaluate.launch", "bag:=" + bag,
                           "ns:=simbot", "model:=random:fastdepth-mnv3", "input_size:=0", "metric:=true",
                           "extrinsics_file:=" + extrinsics, "json:=" + out, "rate:=0.5"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=240)
    assert os.path.exists(out), proc.stdout[-3000:]
    result = json.loads(open(out).read())
    o = result["obstacles"]
    assert result["dataset"] == sim2bag.SIM_DATASET and result["frames"] >= 6, result["frames"]
    assert o["distance_frames"] + o["frames_without_output"] >= result["frames"], o
    assert o["obstacle_frames"] >= 1 and o["obstacle_pixels"] > 0 and o["obstacle_abs_rel"] is not None, o


def test_sim_bench_table_for_the_road_plane_baseline(obstacle_bag, tmp_path, capsys):
    from depth_estimation.evaluation import sim_bench

    out = tmp_path / "bench"
    assert sim_bench.main(["--bags", obstacle_bag[0], "--models", "road-plane", "--out", str(out)]) == 0
    result = json.loads((out / "sim_bench.json").read_text())["models"]["road-plane"]
    assert result["frames"] == 12 and result["relative"]["abs_rel"] < 0.15 and result["confident_share"] == 1.0
    assert result["obstacles"]["obstacle_abs_rel"] > 0.2 and result["obstacles"]["detection_rate_1m"] in (None, 0.0)
    table = (out / "sim_bench.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| `road-plane` | 12 |"), table
    assert (out / "predictions" / "road-plane" / "loop_empty" / "000011.npy").exists()
    # --stride: every 4th frame (the same ones for every model), predictions apart from the full run's
    assert sim_bench.main(["--bags", obstacle_bag[0], "--models", "road-plane", "--out", str(out),
                           "--stride", "4"]) == 0
    strided = json.loads((out / "sim_bench.json").read_text())
    assert strided["stride"] == 4 and strided["models"]["road-plane"]["frames"] == 3
    assert len(os.listdir(str(out / "predictions" / "road-plane" / "loop_empty_every4"))) == 3
