"""Depth metrics, alignment, crops, and depth-eval end to end on a small RGB-D bag."""
import csv
import json
import os

import numpy as np
import pytest

from depth_estimation.evaluation import metrics
def _scene(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return (1.0 + 3.0 * yy / h + 2.0 * xx / w + 0.3 * rng.random((h, w))).astype(np.float32)


def test_compute_matches_direct_numpy():
    gt = _scene()
    rng = np.random.default_rng(1)
    pred = gt * (1.0 + 0.3 * rng.standard_normal(gt.shape)).clip(0.2, None)
    mask = np.ones(gt.shape, bool)
    mask[:5] = False
    got = metrics.compute(pred, gt, mask)
    p, d = pred[mask].astype(np.float64), gt[mask].astype(np.float64)
    ratio = np.maximum(p / d, d / p)
    want = {
        "abs_rel": np.mean(np.abs(p - d) / d),
        "sq_rel": np.mean((p - d) ** 2 / d),
        "rmse": np.sqrt(np.mean((p - d) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(p) - np.log(d)) ** 2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(d))),
        "delta1": np.mean(ratio < 1.25), "delta2": np.mean(ratio < 1.5625), "delta3": np.mean(ratio < 1.953125),
    }
    assert tuple(got) == metrics.METRICS
    for key in metrics.METRICS:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    assert 0 < got["delta1"] < got["delta2"] <= got["delta3"] <= 1


def test_perfect_prediction_and_known_ratio():
    gt = _scene()
    mask = np.ones(gt.shape, bool)
    perfect = metrics.compute(gt, gt, mask)
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["delta1"] == 1
    off = metrics.compute(gt * 1.3, gt, mask)  # ratio 1.3: fails delta1, passes delta2
    assert off["abs_rel"] == pytest.approx(0.3, rel=1e-6)
    assert off["delta1"] == 0 and off["delta2"] == 1
    assert off["log10"] == pytest.approx(np.log10(1.3), rel=1e-6)


def test_lsq_disparity_undoes_affine_disparity():
    gt = _scene()
    mask = metrics.valid_mask(gt)
    pred_disp = 7.5 / gt + 0.4  # affine transform of the true disparity
    aligned = metrics.align(pred_disp, gt, mask, "lsq-disparity", "disparity")
    assert metrics.compute(aligned, gt, mask)["abs_rel"] < 1e-5
    # a depth-kind prediction is inverted to disparity first
    aligned = metrics.align(1.0 / pred_disp, gt, mask, "lsq-disparity", "depth")
    assert metrics.compute(aligned, gt, mask)["abs_rel"] < 1e-5


def test_lsq_disparity_clamps_far_and_clips_range():
    gt = _scene()
    mask = np.ones(gt.shape, bool)
    pred = 1.0 / gt
    pred[0, 0] = -5.0  # aligned disparity below 1/max_depth -> max_depth, not negative depth
    aligned = metrics.align(pred, gt, mask, "lsq-disparity", "disparity", min_depth=1e-3, max_depth=10.0)
    assert np.all(aligned >= 1e-3) and np.all(aligned <= 10.0)
    assert aligned[0, 0] == pytest.approx(10.0)


def test_median_scaling_undoes_constant():
    gt = _scene()
    mask = metrics.valid_mask(gt)
    aligned = metrics.align(gt * 3.7, gt, mask, "median", "depth")
    assert metrics.compute(aligned, gt, mask)["abs_rel"] < 1e-6
    aligned = metrics.align(0.2 / gt, gt, mask, "median", "disparity")  # disparity is inverted first
    assert metrics.compute(aligned, gt, mask)["abs_rel"] < 1e-6


def test_none_mode_keeps_metric_depth_and_clips():
    gt = _scene()
    mask = np.ones(gt.shape, bool)
    pred = gt.copy()
    pred[0, 0] = 50.0
    pred[0, 1] = 0.0
    out = metrics.align(pred, gt, mask, "none", "depth", min_depth=0.5, max_depth=10.0)
    assert out[0, 0] == 10.0 and out[0, 1] == 0.5
    np.testing.assert_allclose(out[1:], gt[1:], rtol=1e-6)
    with pytest.raises(ValueError):
        metrics.align(pred, gt, mask, "bogus")


def test_valid_mask_depth_range_and_nan():
    gt = np.full((4, 5), 2.0, np.float32)
    gt[0, 0], gt[0, 1], gt[0, 2], gt[0, 3], gt[0, 4] = 0.0, np.nan, 12.0, 10.0, np.inf
    mask = metrics.valid_mask(gt, 1e-3, 10.0)
    assert mask[1:].all()
    assert not mask[0].any()
    assert metrics.valid_mask(gt, 2.5, 20.0)[0].tolist() == [False, False, True, True, False]


def test_eigen_crop_nyu():
    gt = np.full((480, 640), 3.0, np.float32)
    mask = metrics.valid_mask(gt, crop="eigen")
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600]
    assert not mask[44, 300] and not mask[471, 300] and not mask[200, 40] and not mask[200, 601]
    # other sizes: the same box scaled proportionally
    assert metrics.crop_box((240, 320), "eigen") == (22, 236, 20, 300)  # 22.5 rounds to even
    assert metrics.crop_box((960, 1280), "eigen") == (90, 942, 82, 1202)


def test_garg_crop_kitti():
    h, w = 375, 1242
    box = metrics.crop_box((h, w), "garg")
    assert box == (int(0.40810811 * h), int(0.99189189 * h), int(0.03594771 * w), int(0.96405229 * w))
    mask = metrics.valid_mask(np.full((h, w), 20.0), max_depth=80.0, crop="garg")
    top, bottom, left, right = box
    assert mask.sum() == (bottom - top) * (right - left)
    assert not mask[:top].any() and not mask[bottom:].any() and not mask[:, :left].any()
    assert metrics.crop_box((h, w), "none") is None and metrics.valid_mask(np.ones((3, 3)), crop=None).all()


def test_crop_changes_the_score():
    gt = np.full((480, 640), 2.0, np.float32)
    pred = gt.copy()
    pred[:45] = 4.0  # wrong only outside the Eigen crop
    assert metrics.compute(pred, gt, metrics.valid_mask(gt, crop="eigen"))["abs_rel"] == 0
    assert metrics.compute(pred, gt, metrics.valid_mask(gt, crop="none"))["abs_rel"] > 0


def test_mean_of_per_frame():
    a = dict.fromkeys(metrics.METRICS, 1.0)
    b = dict.fromkeys(metrics.METRICS, 3.0)
    b["delta1"] = 0.0
    mean = metrics.mean_metrics([a, b])
    assert mean["abs_rel"] == 2.0 and mean["delta1"] == 0.5
    # per-frame mean, not pooled over pixels
    gt1, gt2 = np.full((2, 2), 1.0), np.full((10, 10), 1.0)
    f1 = metrics.compute(gt1 * 2, gt1, np.ones((2, 2), bool))
    f2 = metrics.compute(gt2, gt2, np.ones((10, 10), bool))
    assert metrics.mean_metrics([f1, f2])["abs_rel"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        metrics.mean_metrics([])


def test_compute_refuses_empty_mask_and_bad_shapes():
    gt = _scene()
    with pytest.raises(ValueError):
        metrics.compute(gt, gt, np.zeros(gt.shape, bool))
    with pytest.raises(ValueError):
        metrics.compute(gt[:-1], gt, np.ones(gt.shape, bool))


# ---------------------------------------------------------------- depth-eval end to end

NS = "testbot"
IMAGE_TOPIC = "/%s/camera_node/image/compressed" % NS
DEPTH_TOPIC = "/%s/depth_gt/image_raw" % NS


def _write_rgbd_bag(path, gts, extra_image_stamp=None, start_ns=1_700_000_000_000_000_000, ns_name=NS):
    """A bag with PNG camera frames and 32FC1 ground truth on the same stamps (+ one unmatched frame)."""
    import cv2
    from rosbags.rosbag1 import Writer

    from depth_estimation.io.bags import typestore

    store = typestore()
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Compressed = store.types["sensor_msgs/msg/CompressedImage"]
    Image = store.types["sensor_msgs/msg/Image"]
    rng = np.random.default_rng(0)
    stamps = []
    with Writer(path) as writer:
        c_img = writer.add_connection("/%s/camera_node/image/compressed" % ns_name, "sensor_msgs/msg/CompressedImage",
                                      typestore=store)
        c_gt = writer.add_connection("/%s/depth_gt/image_raw" % ns_name, "sensor_msgs/msg/Image", typestore=store)

        def image_msg(ns, h, w):
            header = Header(seq=0, stamp=Time(sec=ns // 10 ** 9, nanosec=ns % 10 ** 9), frame_id="cam")
            png = cv2.imencode(".png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[1].tobytes()
            return header, Compressed(header=header, format="png", data=np.frombuffer(png, np.uint8))

        for i, gt in enumerate(gts):
            ns = start_ns + i * 33_333_333
            h, w = gt.shape
            header, img = image_msg(ns, h, w)
            depth = Image(header=header, height=h, width=w, encoding="32FC1", is_bigendian=0, step=w * 4,
                          data=np.frombuffer(gt.astype("<f4").tobytes(), np.uint8))
            writer.write(c_img, ns, store.serialize_ros1(img, "sensor_msgs/msg/CompressedImage"))
            writer.write(c_gt, ns + 1000, store.serialize_ros1(depth, "sensor_msgs/msg/Image"))
            stamps.append(ns)
        if extra_image_stamp is not None:
            h, w = gts[0].shape
            _header, img = image_msg(extra_image_stamp, h, w)
            writer.write(c_img, extra_image_stamp, store.serialize_ros1(img, "sensor_msgs/msg/CompressedImage"))
    return stamps


@pytest.fixture(scope="module")
def rgbd_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbd")
    gts = [_scene(48, 64, seed) for seed in range(3)]
    gts[1][:4] = 0.0  # invalid ground truth rows
    gts[2][0, :] = np.nan
    path = str(root / "rgbd.bag")
    _write_rgbd_bag(path, gts, extra_image_stamp=1_800_000_000_000_000_000)
    return path, gts


def test_depth_eval_oracle_predictions(rgbd_bag, tmp_path):
    from depth_estimation.evaluation import evaluate
    bag, gts = rgbd_bag
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for i, gt in enumerate(gts):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.save(pred_dir / ("%06d.npy" % i), (3.0 / gt + 0.2).astype(np.float32))  # affine disparity
    out_json, out_csv = tmp_path / "e.json", tmp_path / "e.csv"
    assert evaluate.main(["--bag", bag, "--predictions", str(pred_dir), "--align", "lsq-disparity",
                          "--json", str(out_json), "--csv", str(out_csv)]) == 0
    result = json.loads(out_json.read_text())
    assert result["frames"] == 3 and len(result["per_frame"]) == 3
    assert result["metrics"]["abs_rel"] < 1e-4 and result["metrics"]["delta1"] == 1.0
    assert result["unmatched"]["images"] == 1 and result["unmatched"]["depths"] == 0
    assert result["image_topic"] == IMAGE_TOPIC and result["depth_topic"] == DEPTH_TOPIC  # auto-detected
    assert result["align"] == "lsq-disparity" and result["crop"] == "auto:none"
    assert result["per_frame"][1]["valid_pixels"] == 44 * 64 and result["per_frame"][2]["valid_pixels"] == 47 * 64
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["frame", "stamp", "valid_pixels"] and len(rows) == 1 + 3 + 1
    assert rows[-1][0] == "mean"
    assert float(rows[-1][3]) == pytest.approx(result["metrics"]["abs_rel"], abs=1e-6)
    # as depth with median scaling, via explicit topics
    for i, gt in enumerate(gts):
        np.save(pred_dir / ("%06d.npy" % i), (np.nan_to_num(gt) * 2.5).astype(np.float32))
    assert evaluate.main(["--bag", bag, "--predictions", str(pred_dir), "--pred-kind", "depth", "--align", "median",
                          "--image-topic", IMAGE_TOPIC, "--depth-topic", DEPTH_TOPIC, "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["metrics"]["abs_rel"] < 1e-6
    # a wrong-size prediction and a missing file are refused
    np.save(pred_dir / "000001.npy", np.ones((10, 10), np.float32))
    assert evaluate.main(["--bag", bag, "--predictions", str(pred_dir), "--align", "median"]) == 1
    os.remove(pred_dir / "000001.npy")
    assert evaluate.main(["--bag", bag, "--predictions", str(pred_dir), "--align", "median"]) == 1


def test_depth_eval_eigen_crop_auto(tmp_path):
    from depth_estimation.evaluation import evaluate
    gt = np.full((480, 640), 3.0, np.float32)
    bag = str(tmp_path / "nyu.bag")
    _write_rgbd_bag(bag, [gt], ns_name="nyu")  # the namespace depth-nyu2bag writes
    (tmp_path / "p").mkdir()
    pred = gt.copy()
    pred[:45] = 9.0  # wrong only outside the Eigen crop
    np.save(tmp_path / "p" / "000000.npy", pred)
    result = evaluate.evaluate(bag, "none", predictions=str(tmp_path / "p"), pred_kind="depth")
    assert result["crop"] == "auto:eigen" and result["metrics"]["abs_rel"] == 0
    assert result["per_frame"][0]["valid_pixels"] == (471 - 45) * (601 - 41)
    assert evaluate.evaluate(bag, "none", predictions=str(tmp_path / "p"), pred_kind="depth",
                             crop="none")["metrics"]["abs_rel"] > 0
    other = str(tmp_path / "tum.bag")  # another RGB-D camera of the same size: no NYU crop by default
    _write_rgbd_bag(other, [gt], ns_name="rgbd")
    assert evaluate.evaluate(other, "none", predictions=str(tmp_path / "p"), pred_kind="depth")["crop"] == "auto:none"


def test_depth_eval_model_saves_predictions(rgbd_bag, tiny_dir, tmp_path):
    from depth_estimation.evaluation import evaluate
    bag, gts = rgbd_bag
    saved, out_json = tmp_path / "saved", tmp_path / "m.json"
    assert evaluate.main(["--bag", bag, "--model", tiny_dir, "--input-size", "28", "--align", "lsq-disparity",
                          "--save-predictions", str(saved), "--json", str(out_json)]) == 0
    files = sorted(os.listdir(saved))
    assert files == ["%06d.npy" % i for i in range(len(gts))]
    for name, gt in zip(files, gts):
        arr = np.load(saved / name)
        assert arr.dtype == np.float32 and arr.shape == gt.shape
    result = json.loads(out_json.read_text())
    assert result["frames"] == 3 and result["model"] == tiny_dir
    assert all(np.isfinite(v) for v in result["metrics"].values())
    # the saved raw outputs score the same as the model run
    again = evaluate.evaluate(bag, "lsq-disparity", predictions=str(saved))
    for key in metrics.METRICS:
        assert again["metrics"][key] == pytest.approx(result["metrics"][key], rel=1e-6, abs=1e-9)
