"""Ground truth as the label source (``depth-distill label --teacher ground-truth``): RGB-D bags written by
the project's converters -> label cache (1/metres, no depth masked) -> training, alone and mixed with
teacher labels; the shipped-student spec ``fastdepth-duckietown``."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from depth_estimation.distill import cli as distill
from depth_estimation.distill import data, ground_truth, label_cache
from depth_estimation.evaluation.convert_rgbd import write_rgbd_bag
from depth_estimation.io.bags import SIM_DATASET
from depth_estimation.io.rgbd import depth_from_msg, detect_topics, paired_frames
from depth_estimation.models import fastdepth, specs
from depth_estimation.models.specs import ModelNotFound, parse_spec
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.tools import weights as weights_cmd
from conftest import INCLUDE, ROOT
from depth_fixtures import REAL_RGBD, rgbd_fixture

K = (60.0, 60.0, 48.0, 32.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_frames(n=4, h=64, w=96):
    """(RGB, depth) pairs: a ground plane (nearer downwards), a box, a hole without depth (0), a band
    of sky at +inf."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        depth = np.tile(np.linspace(4.0, 0.5, h, dtype=np.float32)[:, None], (1, w))
        depth[20:40, 10 + 5 * i:40 + 5 * i] = 0.8
        depth[:6] = np.inf
        depth[44:52, 60:80] = 0  # no measurement
        rgb = (rng.uniform(0, 255, (h, w, 3)) * 0.3 + 100 / depth.clip(0.5, 4)[..., None] * 0.7)
        out.append((np.clip(rgb, 0, 255).astype(np.uint8), depth))
    return out


@pytest.fixture(scope="module")
def rgbd_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbd")
    write_rgbd_bag(synthetic_frames(), str(root / "a.bag"), K, ns="simbot", progress=False, dataset="sim")
    rgbd_fixture(str(root / "b.bag"))  # the real TUM frames: Kinect depth with real holes (0)
    return str(root)


def _npy(cache, key):
    return np.load(label_cache.item_path(cache, key, ".npy")).astype(np.float32)


def test_labels_are_inverse_depth_with_missing_depth_masked(rgbd_bags, tmp_path):
    cache = str(tmp_path / "gt")
    counts = ground_truth.label_ground_truth(cache, os.path.join(rgbd_bags, "*.bag"), label_size=1000,
                                             progress=False)
    assert counts == {"seen": 6, "labelled": 6, "skipped": 0, "failed": 0}
    assert json.load(open(os.path.join(cache, "teacher.json")))["teacher"] == "ground-truth"
    entries = {e["source"]: e for e in label_cache.iter_cache(cache)}
    bag = os.path.join(rgbd_bags, "a.bag")
    image_topic, depth_topic = detect_topics(bag)
    for index, (_stamp, _img, depth_msg) in enumerate(paired_frames(bag, image_topic, depth_topic,
                                                                    {"images": [], "depths": []})):
        depth = depth_from_msg(depth_msg)
        entry = entries["%s:%s:%d" % (bag, image_topic, index)]
        label = _npy(cache, entry["key"])  # label size >= frame: the frame's own size
        assert label.shape == depth.shape == tuple(entry["label_hw"])
        valid = depth > 0
        assert np.array_equal(np.isfinite(label), valid)  # 0 = no measurement: NaN, masked
        np.testing.assert_allclose(label[valid], np.float16(1.0 / depth[valid]), rtol=1e-3)
        assert (label[np.isinf(depth)] == 0).all()  # a ray hitting nothing: far, a valid target
        rgb, loaded = label_cache.load_item(cache, entry)
        assert rgb.shape[:2] == depth.shape and loaded.shape == depth.shape

    tum = [e for s, e in entries.items() if s.startswith(os.path.join(rgbd_bags, "b.bag"))]
    tum_depth = cv2.imread(os.path.join(REAL_RGBD, "depth", "depth_1.png"), cv2.IMREAD_UNCHANGED)
    holes = tum_depth == 0
    assert holes.any() and len(tum) == 2
    masks = [~np.isfinite(_npy(cache, e["key"])) for e in tum]
    assert any(np.array_equal(m, holes) for m in masks)  # the real Kinect holes are exactly the mask

    again = ground_truth.label_ground_truth(cache, os.path.join(rgbd_bags, "*.bag"), label_size=1000,
                                            progress=False)
    assert again == {"seen": 6, "labelled": 0, "skipped": 6, "failed": 0}  # resumable


def test_a_simulator_bags_zero_depth_is_the_far_sky_and_a_cameras_is_masked(rgbd_bags, tmp_path):
    """depth-sim2bag's 0 is the sky (or beyond its range): far, a target the student learns, so it does
    not make the sky up (the first student read the plain sky as near and stopped at once); a depth
    camera's 0 is a hole, masked. --zero-depth overrides; a cache keeps one meaning of 0."""
    sim = str(tmp_path / "sim.bag")
    write_rgbd_bag(synthetic_frames(2), sim, K, ns="simbot", progress=False, dataset=SIM_DATASET)
    camera = os.path.join(rgbd_bags, "a.bag")
    caches = {}
    for zero_depth, bag, far in (("auto", sim, True), ("auto", camera, False), ("far", camera, True),
                                 ("missing", sim, False)):
        cache = caches[zero_depth, bag] = str(tmp_path / ("gt_%s_%d" % (zero_depth, len(caches))))
        args = ["label", "--teacher", "ground-truth", "--bags", bag, "--cache", cache, "--label-size", "1000",
                "--no-progress"] + ([] if zero_depth == "auto" else ["--zero-depth", zero_depth])
        assert distill.main(args) == 0
        assert json.load(open(os.path.join(cache, "teacher.json")))["zero_depth"] == zero_depth
        for entry in label_cache.iter_cache(cache):
            label = _npy(cache, entry["key"])
            hole = label[44:52, 60:80]  # synthetic_frames' depth 0
            assert (hole == 0).all() if far else np.isnan(hole).all(), (zero_depth, bag)
            assert (label[:6] == 0).all() and np.isfinite(label[6:44]).all()  # +inf and depth: as before
    with pytest.raises(ValueError, match="--zero-depth auto, not missing"):
        ground_truth.label_ground_truth(caches["auto", sim], sim, label_size=1000, progress=False,
                                        zero_depth="missing")
    old = str(tmp_path / "old")  # a cache labelled before --zero-depth existed masked every 0
    ground_truth.label_ground_truth(old, camera, label_size=1000, progress=False, zero_depth="missing")
    record = json.load(open(os.path.join(old, "teacher.json")))
    record.pop("zero_depth")
    json.dump(record, open(os.path.join(old, "teacher.json"), "w"))
    with pytest.raises(ValueError, match="--zero-depth missing, not auto"):
        ground_truth.label_ground_truth(old, sim, label_size=1000, progress=False)


def test_the_dataset_masks_missing_depth_after_crops_and_resizes(rgbd_bags, tmp_path):
    cache = str(tmp_path / "gt")
    ground_truth.label_ground_truth(cache, os.path.join(rgbd_bags, "a.bag"), label_size=48, progress=False)
    keys = data.cache_keys(cache)
    entry = next(label_cache.iter_cache(cache))
    assert tuple(entry["label_hw"]) == (48, 72)  # short side 48, the frame's aspect
    train_set = data.DistillDataset(cache, keys, train=True, size=(32, 64))
    val_set = data.DistillDataset(cache, keys, train=False, size=(32, 64))
    for ds in (train_set, val_set):
        for i in range(len(ds)):
            x, y, m = ds[(i, 1000 + i)] if ds.train else ds[i]
            assert x.shape == (3, 32, 64) and y.shape == m.shape == (32, 64)
            assert np.isfinite(y.numpy()).all() and (y.numpy()[~m.numpy()] == 0).all()
            assert (~m.numpy()).mean() < 0.08
            if not ds.train:  # centre crop 36x72 of the 48x72 label holds the whole 6x15 hole
                hole = 6 * 15 / (36 * 72.0)  # masked: the hole's share, not more (no NaN spreading)
                assert abs((~m.numpy()).mean() - hole) < 0.12 * hole
            assert y.numpy()[m.numpy()].min() >= 0  # the sky's 0 stays a valid target


def test_resize_label_averages_valid_pixels_only():
    label = np.full((40, 60), 2.0, np.float32)
    label[10:20, 10:30] = np.nan
    for hw in ((20, 30), (13, 17), (80, 120)):
        out = label_cache.resize_label(label, *hw)
        finite = np.isfinite(out)
        np.testing.assert_allclose(out[finite], 2.0, rtol=1e-6)  # no NaN leaks into its neighbours
        assert 0.05 < (~finite).mean() < 0.13  # the hole's share (1/12) of the frame, about
    plain = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(label_cache.resize_label(plain, 6, 8),
                                  cv2.resize(plain, (8, 6), interpolation=cv2.INTER_LINEAR))


def test_cli_ground_truth_and_a_mix_with_teacher_labels(rgbd_bags, tiny_dir, tmp_path, capsys):
    gt, teacher, out = str(tmp_path / "gt"), str(tmp_path / "teacher"), str(tmp_path / "run")
    bag = os.path.join(rgbd_bags, "a.bag")
    assert distill.main(["label", "--teacher", "ground-truth", "--bags", bag, "--cache", gt,
                         "--label-size", "48", "--shard", "1/2", "--no-progress"]) == 0
    assert "labelled 2" in capsys.readouterr().out  # items 1 and 3 of 4
    assert distill.main(["label", "--teacher", "ground-truth", "--bags", bag, "--cache", gt,
                         "--label-size", "48", "--shard", "0/2", "--no-progress"]) == 0
    assert len(data.cache_keys(gt)) == 4
    # a cache holds one source: ground truth and a teacher do not share one
    assert distill.main(["label", "--teacher", tiny_dir, "--bags", bag, "--cache", gt, "--input-size", "28",
                         "--no-progress"]) == 2
    assert "ground-truth" in capsys.readouterr().err
    assert distill.main(["label", "--teacher", tiny_dir, "--bags", bag, "--cache", teacher,
                         "--input-size", "28", "--no-progress"]) == 0
    assert distill.main(["label", "--teacher", "ground-truth", "--bags", bag, "--cache", teacher,
                         "--no-progress"]) == 2
    assert "not ground truth" in capsys.readouterr().err
    assert distill.main(["label", "--teacher", "ground-truth", "--images", str(tmp_path), "--cache",
                         str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--bags" in capsys.readouterr().err

    assert distill.main(["train", "--cache", gt, teacher, "--out", out, "--steps", "2", "--batch-size", "2",
                         "--size", "32x64", "--val-fraction", "0", "--no-progress"]) == 0
    history = json.load(open(os.path.join(out, "history.json")))
    assert history["config"]["cache"] == [gt, teacher]
    assert all(np.isfinite(e["loss"]) for e in history["train"])
    keys = data.cache_keys([gt, teacher])
    assert len(keys) == 4 and len(data.DistillDataset([gt, teacher], keys)) == 8  # each label an item
    assert parse_spec(os.path.join(out, "student")).kind == "student_dir"


def test_shipped_spec_loads_its_folder_and_a_missing_one_is_one_line(tmp_path, monkeypatch, tum_rgb, capsys):
    folder = str(tmp_path / "fastdepth-duckietown")
    monkeypatch.setitem(specs.SHIPPED, "fastdepth-duckietown", folder)
    with pytest.raises(ModelNotFound) as err:
        parse_spec("fastdepth-duckietown")
    assert "\n" not in str(err.value) and "git checkout" in str(err.value) and folder in str(err.value)
    fastdepth.save_student(fastdepth.random_student(3), folder)
    spec = parse_spec("fastdepth-duckietown")
    assert (spec.kind, spec.family, spec.path, spec.untrained) == ("student_dir", "fastdepth", folder, False)
    est = DepthEstimator("fastdepth-duckietown", input_size=None).load()
    depth = est.infer(tum_rgb)
    assert depth.shape == tum_rgb.shape[:2] and np.isfinite(depth).all()
    assert weights_cmd.main(["fetch", "fastdepth-duckietown"]) == 0  # shipped: nothing to download
    assert capsys.readouterr().out.strip() == folder
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(ModelNotFound, match="model.safetensors"):
        DepthEstimator("fastdepth-duckietown").load()
    assert weights_cmd.main(["where", "fastdepth-duckietown"]) == 1  # the image build stops here
    assert "git checkout" in capsys.readouterr().err


def test_the_shipped_folder_is_found_through_a_catkin_workspace_link(tmp_path):
    # make setup links the package into .build/catkin_ws/src/, and catkin's devel space imports it from
    # there: the shipped model must still be the checkout's assets folder, not one under the workspace
    link = tmp_path / "catkin_ws" / "src" / "depth_estimation"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.dirname(INCLUDE))
    code = "from depth_estimation.models import specs; print(specs.parse_spec('fastdepth-duckietown').path)"
    env = dict(os.environ, PYTHONPATH=str(link / "include"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == os.path.join(ROOT, "assets", "models", "fastdepth-duckietown")
