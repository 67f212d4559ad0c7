"""`depth-eval --align ground` end to end on real RGB-D frames with a visible floor: the floor plane is
fitted to the ground truth once (as a robot's extrinsic calibration is made once), written as a
Duckietown extrinsic file, and oracle predictions under an unknown scale and shift, with noise and an
obstacle standing on the floor, must come out in metres without the ground truth being used for the
scale."""
import json
import os

import cv2
import numpy as np
import pytest

from depth_estimation.evaluation import convert_rgbd, evaluate
from depth_estimation.geometry.calibration import (Intrinsics, homography_from_plane, plane_from_normal,
                                                   read_extrinsics, write_extrinsics)

from conftest import ROOT
from depth_fixtures import add_obstacle, fit_floor
from depth_fixtures import floor_depth as gt_depth

FLOOR = os.path.join(ROOT, "assets", "rgbd_floor")  # slambook2 ch5/rgbd dining room, frames 1, 3, 5
FX, FY, CX, CY = 518.0, 519.0, 325.5, 253.5
FRAMES = ["1", "3", "5"]
SCALE, SHIFT = 0.37, 0.8  # the "model's" unknown affine map of true disparity (1/m)


def oracle_prediction(depth, seed):
    """The ground truth's disparity under the unknown affine map, 2 % noise; NaN where it has no value."""
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        disparity = np.where(depth > 0, 1.0 / depth, np.nan)
    noisy = disparity * (1.0 + 0.02 * rng.standard_normal(depth.shape))
    return (SCALE * noisy + SHIFT).astype(np.float32)


@pytest.fixture(scope="module")
def floor_case(tmp_path_factory):
    """Per frame: a one-frame bag made by depth-rgbd2bag (ground truth with the obstacle), the floor's
    Duckietown extrinsic file and a folder of oracle predictions."""
    root = tmp_path_factory.mktemp("floor")
    cases = {}
    intrinsics = Intrinsics(FX, FY, CX, CY, 640, 480)
    for k, name in enumerate(FRAMES):
        depth = gt_depth(name)
        normal, distance = fit_floor(depth)
        extrinsics = write_extrinsics(str(root / ("floor_%s.yaml" % name)),
                                      homography_from_plane(plane_from_normal(normal, distance), intrinsics))
        scene = add_obstacle(depth)
        frame_dir = root / ("frame_%s" % name)
        frame_dir.mkdir()
        cv2.imwrite(str(frame_dir / "rgb.png"), cv2.imread(os.path.join(FLOOR, "color", name + ".png")))
        cv2.imwrite(str(frame_dir / "depth.png"), np.round(scene * 1000).astype(np.uint16))
        bag = str(root / ("floor_%s.bag" % name))
        assert convert_rgbd.rgbd_main(["--rgb", str(frame_dir / "rgb.png"), "--depth", str(frame_dir / "depth.png"),
                                       "--depth-scale", "1000", "--fx", str(FX), "--fy", str(FY), "--cx", str(CX),
                                       "--cy", str(CY), "--out", bag]) == 0
        pred_dir = root / ("pred_%s" % name)
        pred_dir.mkdir()
        np.save(str(pred_dir / "000000.npy"), oracle_prediction(scene, seed=k))
        cases[name] = {"bag": bag, "extrinsics": extrinsics, "pred": str(pred_dir), "height": distance,
                       "normal": normal}
    return cases


@pytest.mark.parametrize("name", FRAMES)
def test_ground_alignment_gives_metres_without_ground_truth(floor_case, name, tmp_path):
    case = floor_case[name]
    out = tmp_path / "ground.json"
    assert evaluate.main(["--bag", case["bag"], "--predictions", case["pred"], "--align", "ground",
                          "--extrinsics", case["extrinsics"], "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    m = result["metrics"]
    assert m["abs_rel"] <= 0.05 and m["delta1"] >= 0.95, m
    frame = result["per_frame"][0]
    # the fit found the inverse of the unknown map: disparity / SCALE - SHIFT / SCALE
    assert frame["ground_ok"] and abs(frame["ground_scale"] * SCALE - 1.0) < 0.05, frame
    assert abs(frame["ground_shift"] + SHIFT / SCALE) < 0.05 * SHIFT / SCALE, frame
    ground = result["ground"]
    assert result["align"] == "ground" and ground["confident_share"] == 1.0
    assert abs(ground["height_m"] - case["height"]) < 0.01  # the file holds the fitted floor
    assert ground["camera_info_topic"] == "/rgbd/camera_node/camera_info"


def test_a_wrong_calibration_gives_wrong_metres(floor_case, tmp_path):
    """The scale comes from the calibration, not from the ground truth: a camera said to be 30 % higher
    than it is gives depths about 30 % too far (what a user must know about a bad calibration)."""
    case = floor_case["5"]
    plane = plane_from_normal(case["normal"], case["height"] * 1.3)
    wrong = write_extrinsics(str(tmp_path / "wrong.yaml"),
                             homography_from_plane(plane, Intrinsics(FX, FY, CX, CY, 640, 480)))
    result = evaluate.evaluate(case["bag"], "ground", predictions=case["pred"], ground={
        "extrinsics": wrong, "plane_hpr": None, "threshold": 0.08, "min_inlier_share": 0.1, "max_range_m": 10.0})
    assert 0.2 < result["metrics"]["abs_rel"] < 0.4


def test_ground_plane_option_and_figure(floor_case, tmp_path, capsys):
    """--ground-plane HEIGHT,PITCH,ROLL (no calibration file) gives the same metres as the file; --figure
    writes the camera | relative | metric PNG."""
    case = floor_case["5"]
    plane = read_extrinsics(case["extrinsics"])
    assert plane.version == "1"
    n, height = case["normal"], case["height"]
    pitch, roll = np.degrees(np.arcsin(n[2])), np.degrees(np.arctan2(n[0], n[1]))
    figure = tmp_path / "fig.png"
    argv = ["--bag", case["bag"], "--predictions", case["pred"], "--align", "ground", "--ground-plane",
            "%.4f,%.3f,%.3f" % (height, pitch, roll), "--figure", str(figure)]
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    assert "confident fits 1 of 1 frames" in printed
    image = cv2.imread(str(figure))
    assert image is not None and image.shape[1] > 2 * image.shape[0]
    result = evaluate.evaluate(case["bag"], "ground", predictions=case["pred"], ground={
        "extrinsics": None, "plane_hpr": (height, pitch, roll), "threshold": 0.08, "min_inlier_share": 0.2,
        "max_range_m": 10.0})
    assert result["metrics"]["abs_rel"] <= 0.05


def test_ground_options_are_checked(floor_case, capsys):
    case = floor_case["1"]
    with pytest.raises(SystemExit):
        evaluate.main(["--bag", case["bag"], "--predictions", case["pred"], "--align", "ground"])
    assert "--extrinsics" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--bag", case["bag"], "--predictions", case["pred"], "--extrinsics", case["extrinsics"]])
    with pytest.raises(SystemExit):
        evaluate.main(["--bag", case["bag"], "--predictions", case["pred"], "--align", "ground",
                       "--ground-plane", "-1,15"])


def test_no_confident_fit_is_one_clear_error(floor_case, tmp_path, capsys):
    """Predictions that do not follow the floor (a constant) have no ground fit: exit 1, one line."""
    case = floor_case["3"]
    flat = tmp_path / "flat"
    flat.mkdir()
    np.save(str(flat / "000000.npy"), np.full((480, 640), 0.5, np.float32))
    assert evaluate.main(["--bag", case["bag"], "--predictions", str(flat), "--align", "ground",
                          "--extrinsics", case["extrinsics"]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no frame of %s has a confident ground fit" % case["bag"])


def test_bad_calibration_file_is_one_clear_error(floor_case, tmp_path, capsys):
    case = floor_case["1"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("homography: [1, 2, 3]\n")
    assert evaluate.main(["--bag", case["bag"], "--predictions", case["pred"], "--align", "ground",
                          "--extrinsics", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: %s: homography has 3 numbers; expected 9 (row-major 3x3)" % bad


def test_depth_predictions_are_aligned_through_their_disparity(floor_case, tmp_path):
    """--pred-kind depth (a model that outputs depth up to scale and shift of its inverse) works the same."""
    case = floor_case["1"]
    disparity = np.load(os.path.join(case["pred"], "000000.npy"))
    depth_dir = tmp_path / "depth_pred"
    depth_dir.mkdir()
    np.save(str(depth_dir / "000000.npy"), (1.0 / disparity).astype(np.float32))
    ground = {"extrinsics": case["extrinsics"], "plane_hpr": None, "threshold": 0.08, "min_inlier_share": 0.1,
              "max_range_m": 10.0}
    as_depth = evaluate.evaluate(case["bag"], "ground", predictions=str(depth_dir), pred_kind="depth", ground=ground)
    as_disparity = evaluate.evaluate(case["bag"], "ground", predictions=case["pred"], ground=ground)
    assert abs(as_depth["metrics"]["abs_rel"] - as_disparity["metrics"]["abs_rel"]) < 1e-4
    assert as_depth["metrics"]["abs_rel"] <= 0.05
