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


def test_compute_hand_computed_values():
    """Four scored pixels (the third column is masked out), every metric worked out by hand:

        d = 1, 2, 4, 2          p = 1.1, 2.8, 2.5, 6        p - d = 0.1, 0.8, -1.5, 4
        abs_rel  = (0.1/1 + 0.8/2 + 1.5/4 + 4/2) / 4 = (0.1 + 0.4 + 0.375 + 2) / 4 = 0.71875
        sq_rel   = (0.01/1 + 0.64/2 + 2.25/4 + 16/2) / 4 = (0.01 + 0.32 + 0.5625 + 8) / 4 = 2.223125
        rmse     = sqrt((0.01 + 0.64 + 2.25 + 16) / 4) = sqrt(4.725) = 2.1737065119
        ln(p/d)  = ln 1.1, ln 1.4, ln 0.625, ln 3 = 0.0953102, 0.3364722, -0.4700036, 1.0986123
        rmse_log = sqrt((0.0090840 + 0.1132136 + 0.2209034 + 1.2069490) / 4) = sqrt(0.3875375) = 0.6225251
        log10    = (0.0413927 + 0.1461280 + 0.2041200 + 0.4771213) / 4 = 0.2171905
        max(p/d, d/p) = 1.1, 1.4, 1.6, 3: < 1.25 once, < 1.5625 twice, < 1.953125 three times
    """
    gt = np.array([[1.0, 2.0, 7.0], [4.0, 2.0, 7.0]])
    pred = np.array([[1.1, 2.8, 70.0], [2.5, 6.0, 0.7]])  # the masked column would change every metric
    mask = np.array([[True, True, False], [True, True, False]])
    got = metrics.compute(pred, gt, mask)
    want = {"abs_rel": 0.71875, "sq_rel": 2.223125, "rmse": 2.1737065119, "rmse_log": 0.6225251,
            "log10": 0.2171905, "delta1": 0.25, "delta2": 0.5, "delta3": 0.75}
    assert tuple(got) == metrics.METRICS
    for key in metrics.METRICS:
        assert got[key] == pytest.approx(want[key], rel=1e-6), key


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
    pred[0, 1] = 0.1
    out = metrics.align(pred, gt, mask, "none", "depth", min_depth=0.5, max_depth=10.0)
    assert out[0, 0] == 10.0 and out[0, 1] == 0.5
    np.testing.assert_allclose(out[1:], gt[1:], rtol=1e-6)
    with pytest.raises(ValueError):
        metrics.align(pred, gt, mask, "bogus")


@pytest.mark.parametrize("mode", metrics.ALIGN_MODES)
@pytest.mark.parametrize("bad", [0.0, -2.0, np.nan, np.inf])
def test_invalid_depth_pixels_stay_out_of_the_fit_and_the_scores(mode, bad):
    """An oracle depth map with one pixel of no value (0, negative, NaN, inf) still scores AbsRel 0:
    that pixel is neither fitted (one 0 inverted with a 1e-12 floor used to move AbsRel to ~0.66) nor
    scored (align gives NaN there), and it is counted."""
    gt = _scene()
    mask = metrics.valid_mask(gt)
    pred = gt.copy()
    pred[10, 20] = bad
    usable = metrics.valid_prediction(pred, "depth")
    assert int((mask & ~usable).sum()) == 1 and not usable[10, 20]
    aligned = metrics.align(pred, gt, mask, mode, "depth")
    assert np.isnan(aligned[10, 20]) and np.isfinite(np.delete(aligned.ravel(), 10 * gt.shape[1] + 20)).all()
    assert metrics.compute(aligned, gt, mask & usable)["abs_rel"] < 1e-6


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_invalid_disparity_pixels_stay_out_of_the_fit(bad):
    gt = _scene()
    mask = metrics.valid_mask(gt)
    disp = (3.0 / gt + 0.2).astype(np.float32)
    disp[7, 9] = bad
    disp[8, 9], mask[8, 9] = -0.1, False  # a disparity <= 0 is a value (here far: clipped to max_depth)
    usable = metrics.valid_prediction(disp, "disparity")
    assert int((mask & ~usable).sum()) == 1 and usable[8, 9]
    aligned = metrics.align(disp, gt, mask, "lsq-disparity", "disparity")
    assert np.isnan(aligned[7, 9]) and aligned[8, 9] == 10.0
    assert metrics.compute(aligned, gt, mask & usable)["abs_rel"] < 1e-5
    with pytest.raises(ValueError, match="all prediction pixels invalid"):
        metrics.align(np.full(gt.shape, np.nan), gt, mask, "lsq-disparity", "disparity")


def test_score_frame_counts_invalid_prediction_pixels():
    from depth_estimation.evaluation.scoring import ScoreOptions, score_frame
    gt = _scene()
    gt[0, :5] = 0.0  # no ground truth here: a bad prediction on these pixels is not counted
    pred = gt.copy()
    pred[3, 4], pred[5, 6], pred[0, 0] = 0.0, np.nan, np.nan
    topic = "/x/depth_gt/image_raw"
    record, crop, ok = score_frame(0, 10 ** 9, pred, gt, "depth", ScoreOptions("lsq-disparity", "none", topic))
    assert ok and crop == "none" and record["valid_pixels"] == gt.size - 5
    assert record["invalid_prediction_pixels"] == 2 and record["abs_rel"] < 1e-6
    record, _crop, ok = score_frame(1, 10 ** 9, np.full(gt.shape, np.nan), gt, "disparity",
                                    ScoreOptions("median", "none", topic))
    assert not ok and record["invalid_prediction_pixels"] == gt.size - 5
    assert record["skipped"] == "all prediction pixels invalid"
    # a prediction at another size: resized, and every pixel a NaN reached stays out (bilinear, 2x: 4x4)
    small = _scene()[::2, ::2].copy()
    small[10, 10] = np.nan
    record, _crop, ok = score_frame(2, 10 ** 9, small, gt, "depth", ScoreOptions("median", "none", topic))
    assert ok and record["invalid_prediction_pixels"] == 16 and record["abs_rel"] < 0.1


def test_score_options_are_checked_once_when_made():
    from depth_estimation.evaluation.scoring import ScoreOptions

    with pytest.raises(ValueError, match="align"):
        ScoreOptions("lsq")
    with pytest.raises(ValueError, match="depth range"):
        ScoreOptions("median", min_depth=10.0, max_depth=1.0)
    opts = ScoreOptions("median")
    with pytest.raises(Exception):  # frozen: one object for the whole run
        opts.align = "none"


def test_valid_mask_depth_range_and_nan():
    gt = np.full((4, 5), 2.0, np.float32)
    gt[0, 0], gt[0, 1], gt[0, 2], gt[0, 3], gt[0, 4] = 0.0, np.nan, 12.0, 10.0, np.inf
    mask = metrics.valid_mask(gt, 1e-3, 10.0)
    assert mask[1:].all()
    assert not mask[0].any()
    assert metrics.valid_mask(gt, 2.5, 20.0)[0].tolist() == [False, False, True, True, False]


def test_eigen_crop_nyu():
    # the reference box: rows 45:471, cols 41:601 of a 480x640 NYU frame (Eigen et al., BTS, AdaBins)
    assert metrics.crop_box((480, 640), "eigen") == (45, 471, 41, 601)
    assert metrics.crop_box((480, 640, 3), "eigen") == (45, 471, 41, 601)
    gt = np.full((480, 640), 3.0, np.float32)
    mask = metrics.valid_mask(gt, crop="eigen")
    assert mask.sum() == 426 * 560 == 238560
    assert mask[45, 41] and mask[470, 600]
    assert not mask[44, 300] and not mask[471, 300] and not mask[200, 40] and not mask[200, 601]
    # other sizes: the same box scaled proportionally, by hand: 240x320 is half of 480x640, so
    # 45/2 = 22.5 -> 22, 471/2 = 235.5 -> 236, 41/2 = 20.5 -> 20, 601/2 = 300.5 -> 300 (half to even)
    assert metrics.crop_box((240, 320), "eigen") == (22, 236, 20, 300)
    assert metrics.crop_box((960, 1280), "eigen") == (90, 942, 82, 1202)  # twice: 90, 942, 82, 1202
    # 360x480 = 3/4: 33.75 -> 34, 353.25 -> 353, 30.75 -> 31, 450.75 -> 451
    assert metrics.crop_box((360, 480), "eigen") == (34, 353, 31, 451)


def test_garg_crop_kitti():
    h, w = 375, 1242
    box = metrics.crop_box((h, w), "garg")
    # monodepth2's KITTI box at 375x1242: 153.04 -> 153, 371.96 -> 371, 44.65 -> 44, 1197.35 -> 1197
    assert box == (153, 371, 44, 1197)
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


def _affine_oracle(pred_dir, gts):
    """Predictions that are the ground truth's disparity under a scale and a shift."""
    pred_dir.mkdir()
    for i, gt in enumerate(gts):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.save(pred_dir / ("%06d.npy" % i), (3.0 / gt + 0.2).astype(np.float32))
    return pred_dir


def test_depth_eval_oracle_predictions(rgbd_bag, tmp_path):
    from depth_estimation.evaluation import evaluate
    bag, gts = rgbd_bag
    pred_dir = _affine_oracle(tmp_path / "pred", gts)
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


def test_fit_scale_shift_is_one_least_squares_fit():
    rng = np.random.default_rng(3)
    pred = rng.random((20, 30)) + 0.1
    target = 2.5 * pred - 0.75
    mask = np.ones(pred.shape, bool)
    mask[:3] = False
    target[:3] = 99.0  # outliers outside the mask do not count
    scale, shift = metrics.fit_scale_shift(pred, target, mask)
    assert scale == pytest.approx(2.5, rel=1e-9) and shift == pytest.approx(-0.75, rel=1e-9)
    assert metrics.fit_scale_shift(pred[3:], target[3:]) == pytest.approx((2.5, -0.75), rel=1e-9)  # no mask
    with pytest.raises(ValueError):
        metrics.fit_scale_shift(pred, target[1:], mask[1:])


def test_lsq_disparity_align_is_the_disparity_fit():
    """align("lsq-disparity") = the fit of the disparity to 1/gt, inverted and clipped, bit for bit."""
    gt = _scene()
    mask = metrics.valid_mask(gt)
    mask[:6] = False
    disp = (4.0 / gt + 0.3 + 0.05 * np.random.default_rng(4).standard_normal(gt.shape)).astype(np.float32)
    x, y = disp[mask].astype(np.float64), 1.0 / gt[mask].astype(np.float64)
    (s, t), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], axis=1), y, rcond=None)
    want = np.clip(1.0 / np.maximum(s * disp.astype(np.float64) + t, 1.0 / 10.0), 1e-3, 10.0)
    assert np.array_equal(metrics.align(disp, gt, mask, "lsq-disparity", "disparity", 1e-3, 10.0), want)


def test_depth_eval_align_defaults_to_lsq_disparity(rgbd_bag, tmp_path):
    from depth_estimation.evaluation import evaluate
    bag, gts = rgbd_bag
    pred_dir = _affine_oracle(tmp_path / "pred", gts)
    out_json = tmp_path / "e.json"
    assert evaluate.main(["--bag", bag, "--predictions", str(pred_dir), "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["align"] == "lsq-disparity" and result["metrics"]["abs_rel"] < 1e-4
    assert evaluate.evaluate(bag, predictions=str(pred_dir))["metrics"] == result["metrics"]
    args = evaluate.build_parser().parse_args(["--bag", bag, "--predictions", str(pred_dir)])
    assert args.align == "lsq-disparity" and args.input_size == 0


def test_depth_eval_runtime_options_are_the_shared_ones():
    from depth_estimation import options
    from depth_estimation.evaluation import evaluate
    args = evaluate.build_parser().parse_args(["--bag", "b.bag", "--model", "da2-small",
                                               "--backend", "onnxruntime", "--device", "cpu", "--threads", "2"])
    assert options.estimator_kwargs(args) == {"model": "da2-small", "backend": "onnxruntime", "device": "cpu",
                                              "threads": 2, "input_size": None}  # 0 = the model's own size
    with pytest.raises(SystemExit):  # a model and predictions at once
        evaluate.build_parser().parse_args(["--bag", "b.bag", "--model", "m", "--predictions", "p"])


def _save_predictions(pred_dir, preds):
    pred_dir.mkdir(exist_ok=True)
    for i, pred in enumerate(preds):
        np.save(pred_dir / ("%06d.npy" % i), np.asarray(pred, np.float32))


def test_depth_eval_reports_invalid_prediction_pixels(rgbd_bag, tmp_path):
    from depth_estimation.evaluation import evaluate
    bag, gts = rgbd_bag
    preds = []
    for gt in gts:
        pred = np.nan_to_num(gt).copy()  # oracle depth; 0 where the ground truth has none (not scored)
        pred[20, 30] = 0.0  # one depth of no value on a valid ground-truth pixel
        preds.append(pred)
    preds[2][21, 30] = np.nan
    _save_predictions(tmp_path / "p", preds)
    out_json, out_csv = tmp_path / "e.json", tmp_path / "e.csv"
    assert evaluate.main(["--bag", bag, "--predictions", str(tmp_path / "p"), "--pred-kind", "depth",
                          "--json", str(out_json), "--csv", str(out_csv)]) == 0
    result = json.loads(out_json.read_text())
    assert result["metrics"]["abs_rel"] < 1e-6 and result["metrics"]["delta1"] == 1.0
    assert [f["invalid_prediction_pixels"] for f in result["per_frame"]] == [1, 1, 2]
    assert result["invalid_prediction_pixels"] == 4
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["invalid_prediction_pixels"] for r in rows] == ["1", "1", "2", "4"]
    assert rows[-1]["frame"] == "mean" and float(rows[-1]["abs_rel"]) < 1e-6


@pytest.mark.parametrize("kind, bad", [("disparity", np.nan), ("depth", 0.0)])
def test_depth_eval_all_invalid_prediction_names_the_frames(rgbd_bag, tmp_path, capsys, kind, bad):
    from depth_estimation.evaluation import evaluate
    bag, gts = rgbd_bag
    with np.errstate(divide="ignore", invalid="ignore"):
        preds = [(3.0 / gt + 0.2) if kind == "disparity" else np.nan_to_num(gt) for gt in gts]
    preds[1] = np.full(gts[1].shape, bad)
    _save_predictions(tmp_path / "p", preds)
    out_json = tmp_path / "e.json"
    argv = ["--bag", bag, "--predictions", str(tmp_path / "p"), "--pred-kind", kind, "--json", str(out_json)]
    assert evaluate.main(argv) == 1
    err = capsys.readouterr().err
    assert "all prediction pixels invalid" in err and "frame 1 " in err and "Traceback" not in err
    assert "frame 0 " not in err and not out_json.exists()
    _save_predictions(tmp_path / "p", [np.full(gt.shape, bad) for gt in gts])
    for align in metrics.ALIGN_MODES:
        assert evaluate.main(argv + ["--align", align]) == 1
        err = capsys.readouterr().err
        assert "all prediction pixels invalid" in err and "frames 0, 1, 2 " in err, err
    with pytest.raises(ValueError, match="all prediction pixels invalid"):
        evaluate.evaluate(bag, predictions=str(tmp_path / "p"), pred_kind=kind)
