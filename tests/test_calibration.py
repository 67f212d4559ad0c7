"""Duckietown calibration files -> the ground plane: real DB21 robots' files give a plausible camera
pose, the plane agrees with dt-core's own ground projection pixel for pixel, every kind of bad file is
one clear error naming it, and a missing file falls back to the default with a warning."""
import math
import os
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

from depth_estimation.geometry.calibration import (DEFAULT_EXTRINSICS, CalibrationError, Extrinsics, Intrinsics,
                                                   ground_plane,
                                                   homography_from_plane, intrinsics_from_camera_info,
                                                   load_extrinsics, plane_from_height_pitch, read_extrinsics,
                                                   read_intrinsics, write_extrinsics)
from depth_estimation.geometry.ground import ground_depth_map

from conftest import ROOT

CALIBRATIONS = os.path.join(ROOT, "assets", "calibrations")
ROBOTS = ["csc22917", "csc22913"]


def robot(veh):
    folder = os.path.join(CALIBRATIONS, veh)
    return read_intrinsics(os.path.join(folder, "intrinsic.yaml")), read_extrinsics(os.path.join(folder, "extrinsic.yaml"))


UNDISTORT = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-9)


def dt_core_ground(H, intrinsics, u, v, rectify=True):
    """dt-core daffy's ground projection of raw pixels: rectify_point (undistortPoints with K, D, R, P;
    iterated to convergence here), then the homography on the rectified pixel
    (ground_projection_node.pixel_msg_to_ground_msg). ``rectify=False``: the homography on raw pixels."""
    raw = np.stack([u, v], axis=1).reshape(-1, 1, 2).astype(np.float64)
    rect = cv2.undistortPointsIter(raw, intrinsics.K, np.asarray(intrinsics.D), intrinsics.R_matrix,
                                   intrinsics.P_matrix, UNDISTORT).reshape(-1, 2) if rectify else raw.reshape(-1, 2)
    g = np.hstack([rect, np.ones((len(rect), 1))]) @ H.T
    return g[:, :2] / g[:, 2:]


@pytest.mark.parametrize("veh", ROBOTS)
def test_real_db21_calibration_gives_a_plausible_camera_pose(veh):
    intrinsics, extrinsics = robot(veh)
    assert (intrinsics.width, intrinsics.height, intrinsics.model) == (640, 480, "plumb_bob") and intrinsics.distorted
    plane = ground_plane(extrinsics, intrinsics)
    # a DB21's camera: about 10-13 cm above the road, looking 10-20 degrees down, nearly level
    assert 0.08 <= plane.height_m <= 0.15, plane.height_m
    assert 8.0 <= plane.pitch_deg <= 25.0, plane.pitch_deg
    assert abs(plane.roll_deg) < 5.0
    assert 0.0 < plane.t[0] < 0.15 and abs(plane.t[1]) < 0.03  # camera a little ahead of the robot's origin
    assert 60 < plane.horizon_row(intrinsics) < 200  # the road fills the lower image


@pytest.mark.parametrize("veh", ROBOTS)
def test_ground_depth_agrees_with_dt_core_ground_projection(veh):
    """The convention check: for raw (distorted) pixels of the lower image, the point where our pixel ray
    meets the plane is the ground point dt-core's homography gives that pixel, to the millimetre."""
    intrinsics, extrinsics = robot(veh)
    plane = ground_plane(extrinsics, intrinsics)
    depth = ground_depth_map(plane, intrinsics, 480, 640)
    v, u = np.mgrid[300:480:20, 0:640:40]
    u, v = u.reshape(-1), v.reshape(-1)
    raw = np.stack([u, v], axis=1).reshape(-1, 1, 2).astype(np.float64)
    rays = cv2.undistortPointsIter(raw, intrinsics.K, np.asarray(intrinsics.D), None, None, UNDISTORT).reshape(-1, 2)
    z = depth[v, u].astype(np.float64)
    points = np.stack([rays[:, 0] * z, rays[:, 1] * z, z], axis=1) @ plane.R_ground_from_camera.T + plane.t
    assert np.abs(points[:, 2]).max() < 1e-4  # on the ground

    def relative_error(expected):
        return np.linalg.norm(points[:, :2] - expected, axis=1) / np.linalg.norm(expected, axis=1)

    error = relative_error(dt_core_ground(extrinsics.H, intrinsics, u, v))
    # the homography of a real calibration is not exactly rigid: the best rigid plane is within ~1 %
    assert np.median(error) < 0.01 and error.max() < 0.025, error
    # ignoring the distortion (the homography on raw pixels) is several times off
    assert np.median(relative_error(dt_core_ground(extrinsics.H, intrinsics, u, v, rectify=False))) > 0.04
    assert depth[:50].size and np.isnan(depth[:50]).all()  # the top rows are above the horizon


def test_the_rectified_pixels_are_ps_not_ks():
    """The real homographies are a rigid plane only with P's camera matrix (the rectified image's): read
    with K instead, the same file does not fit the camera and is refused."""
    from dataclasses import replace

    intrinsics, extrinsics = robot("csc22917")
    ground_plane(extrinsics, intrinsics)
    with pytest.raises(CalibrationError, match="does not fit the camera's intrinsics"):
        ground_plane(extrinsics, replace(intrinsics, P=None))


def test_write_read_round_trip_and_version_2(tmp_path):
    intrinsics, extrinsics = robot("csc22913")
    plane = ground_plane(extrinsics, intrinsics)
    path = write_extrinsics(str(tmp_path / "calib" / "robot.yaml"), homography_from_plane(plane, intrinsics),
                            comment="fitted by a test")
    assert os.listdir(str(tmp_path / "calib")) == ["robot.yaml"]  # atomic: nothing else left beside it
    data = yaml.safe_load(open(path))
    assert list(data) == ["homography"] and len(data["homography"]) == 9 and data["homography"][8] == 1.0
    again = ground_plane(read_extrinsics(path), intrinsics)
    assert np.allclose(again.normal, plane.normal, atol=1e-9) and abs(again.height_m - plane.height_m) < 1e-9


def _board_seen_by(intrinsics, position, pitch_deg, roll_deg):
    """Duckietown's calibration board (7 x 5 corners, 31 mm squares, x = row * 0.031 + 0.191, y = col *
    0.031 - 0.093 on the ground, dt-core constants.py) seen by a camera at ``position`` (ground frame, x
    forward, y left, z up) pitched down and rolled: (the corners' raw pixels through the lens, K and D,
    their ground points, the camera's rotation ground -> optical). Written out here with OpenCV alone."""
    rows, cols = np.meshgrid(np.arange(5), np.arange(7), indexing="ij")
    ground = np.stack([rows.ravel() * 0.031 + 0.191, cols.ravel() * 0.031 - 0.093, np.zeros(35)], axis=1)
    p, r = math.radians(pitch_deg), math.radians(roll_deg)
    forward, right = np.array([math.cos(p), 0.0, -math.sin(p)]), np.array([0.0, -1.0, 0.0])
    down = np.cross(forward, right)
    right, down = math.cos(r) * right + math.sin(r) * down, -math.sin(r) * right + math.cos(r) * down
    R = np.stack([right, down, forward])  # rows: the optical axes in the ground frame
    rvec, _ = cv2.Rodrigues(R)
    raw, _ = cv2.projectPoints(ground, rvec, -R @ np.asarray(position, float), intrinsics.K,
                               np.asarray(intrinsics.D))
    return raw.reshape(-1, 2), ground[:, :2], R


def test_a_version_2_file_fitted_the_way_duckietown_fits_it_gives_the_camera_pose_that_took_it(tmp_path):
    """Independent of the code under test: a board of known size seen through a real DB21 lens from a
    known pose; the corners rectified as dt's calibration does (image_geometry rectifyPoint: K, D, R,
    P), normalised with K (lib-dt-computer-vision CameraModel.pixel2vector) and fitted to the board's
    ground points (cv2.findHomography), written as lib-dt-computer-vision writes version 2. Reading that
    file must give back the pose the frames were taken from; the daffy form of the same corners (the
    homography of rectified pixels, dt-core estimate_homography) must give the same."""
    intrinsics, _ = robot("csc22917")
    position, pitch, roll = (0.06, 0.01, 0.11), 17.0, 2.0
    raw, ground, R = _board_seen_by(intrinsics, position, pitch, roll)
    rect = cv2.undistortPointsIter(raw.reshape(-1, 1, 2), intrinsics.K, np.asarray(intrinsics.D),
                                   intrinsics.R_matrix, intrinsics.P_matrix, UNDISTORT).reshape(-1, 2)
    K = intrinsics.K
    vectors = np.stack([(rect[:, 0] - K[0, 2]) / K[0, 0], (rect[:, 1] - K[1, 2]) / K[1, 1]], axis=1)
    H2, _ = cv2.findHomography(vectors, ground)
    v2 = tmp_path / "v2.yaml"
    v2.write_text(yaml.safe_dump({"version": "2", "date": "2024-08-18T18:29:27", "homography": H2.tolist()}))
    H1, _ = cv2.findHomography(rect, ground)
    for extrinsics in (read_extrinsics(str(v2)), Extrinsics(tuple(H1.ravel()))):
        plane = ground_plane(extrinsics, intrinsics)
        assert abs(plane.height_m - position[2]) < 1e-4 and abs(plane.pitch_deg - pitch) < 0.02
        assert np.allclose(plane.t, position, atol=1e-4)
        assert np.allclose(plane.R_ground_from_camera, R.T, atol=1e-4)
    assert read_extrinsics(str(v2)).version == "2"


def test_height_pitch_roll_round_trip():
    intrinsics = Intrinsics(320.0, 320.0, 320.0, 240.0, 640, 480)
    plane = plane_from_height_pitch(0.1, 18.0, 3.0)
    assert (plane.height_m, round(plane.pitch_deg, 9), round(plane.roll_deg, 9)) == (0.1, 18.0, 3.0)
    back = ground_plane(Extrinsics(tuple(homography_from_plane(plane, intrinsics).reshape(-1))), intrinsics)
    assert abs(back.height_m - 0.1) < 1e-9 and abs(back.pitch_deg - 18) < 1e-7 and abs(back.roll_deg - 3) < 1e-7
    level = plane_from_height_pitch(0.1, 0.0)
    assert abs(level.horizon_row(intrinsics) - 240.0) < 1e-6  # a level camera sees the horizon at cy
    assert plane_from_height_pitch(0.1, 20.0).horizon_row(intrinsics) < 240.0 - 100


BAD_FILES = {
    "short.yaml": ("homography: [1, 2, 3, 4, 5, 6, 7, 8]\n", "homography has 8 numbers; expected 9"),
    "nan.yaml": ("homography: [1, 0, 0, 0, .nan, 0, 0, 0, 1]\n", "NaN or inf"),
    "inf.yaml": ("homography: [1, 0, 0, 0, .inf, 0, 0, 0, 1]\n", "NaN or inf"),
    "singular.yaml": ("homography: [1, 2, 3, 2, 4, 6, 0, 0, 1]\n", "singular"),
    "words.yaml": ("homography: [a, b, c, d, e, f, g, h, i]\n", "not a list of 9 numbers"),
    "conflict.yaml": ("<<<<<<< HEAD\nhomography: [1, 0, 0, 0, 1, 0, 0, 0, 1]\n=======\n"
                      "homography: [2, 0, 0, 0, 2, 0, 0, 0, 1]\n>>>>>>> robot\n", "git merge-conflict marker"),
    "notyaml.yaml": ("homography: [1, 2\n  - :\n", "not YAML"),
    "nokey.yaml": ("camera_matrix: {rows: 3}\n", "no 'homography' key"),
    "empty.yaml": ("", "holds nothing"),
    "list.yaml": ("- 1\n- 2\n", "not a YAML mapping"),
    "version.yaml": ("version: '3'\nhomography: [1, 0, 0, 0, 1, 0, 0, 0, 1]\n", "version '3'"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_kind_of_bad_file_is_one_clear_error_naming_it(tmp_path, name):
    text, problem = BAD_FILES[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CalibrationError) as info:
        read_extrinsics(str(path))
    message = str(info.value)
    assert message.startswith(str(path) + ": ") and problem in message and "\n" not in message
    with pytest.raises(CalibrationError):  # and no fallback to the default for a malformed file
        load_extrinsics(str(path), DEFAULT_EXTRINSICS)


@pytest.mark.parametrize("case", ["looking_up", "upside_down"])
def test_a_ground_behind_or_above_the_camera_is_refused(tmp_path, case):
    intrinsics, extrinsics = robot("csc22917")
    if case == "looking_up":  # a camera pitched 60 degrees up sees no ground at all
        H = homography_from_plane(plane_from_height_pitch(0.1, -60.0), intrinsics)
    else:  # the camera turned upside down about its optical axis: the "ground" in the upper image
        cx, cy = intrinsics.P_matrix[0, 2], intrinsics.P_matrix[1, 2]
        H = extrinsics.H @ np.array([[-1.0, 0, 2 * cx], [0, -1.0, 2 * cy], [0, 0, 1.0]])
    path = write_extrinsics(str(tmp_path / (case + ".yaml")), H)
    with pytest.raises(CalibrationError) as info:
        ground_plane(read_extrinsics(path), intrinsics)
    assert str(info.value).startswith(path + ": ") and ("below the ground" in str(info.value)
                                                       or "behind the camera" in str(info.value))


def test_missing_file_falls_back_to_the_default_with_a_warning(tmp_path):
    missing = str(tmp_path / "camera_extrinsic" / "robot.yaml")
    extrinsics, warning = load_extrinsics(missing, DEFAULT_EXTRINSICS)
    assert extrinsics.path == DEFAULT_EXTRINSICS and missing in warning and DEFAULT_EXTRINSICS in warning
    intrinsics, _ = robot("csc22917")
    default = ground_plane(extrinsics, intrinsics)  # Duckietown's default is a plausible DB21 pose too
    assert 0.08 <= default.height_m <= 0.15 and 3.0 <= default.pitch_deg <= 25.0
    own, none = load_extrinsics(os.path.join(CALIBRATIONS, "csc22917", "extrinsic.yaml"), DEFAULT_EXTRINSICS)
    assert none is None and own.path.endswith("csc22917/extrinsic.yaml")
    with pytest.raises(CalibrationError, match="no default either"):
        load_extrinsics(missing, str(tmp_path / "no_default.yaml"))


def test_intrinsics_from_camera_info_messages_and_files(tmp_path):
    from_file, _ = robot("csc22917")
    data = yaml.safe_load(open(os.path.join(CALIBRATIONS, "csc22917", "intrinsic.yaml")))
    upper = SimpleNamespace(K=data["camera_matrix"]["data"], D=data["distortion_coefficients"]["data"],
                            P=data["projection_matrix"]["data"], R=data["rectification_matrix"]["data"],
                            width=640, height=480, distortion_model="plumb_bob")
    lower = SimpleNamespace(k=np.array(upper.K), d=np.array(upper.D), p=np.array(upper.P), r=np.array(upper.R),
                            width=640, height=480, distortion_model="plumb_bob")
    assert intrinsics_from_camera_info(upper) == from_file == intrinsics_from_camera_info(lower)
    assert intrinsics_from_camera_info(data) == from_file
    half = from_file.scaled(320, 240)
    assert (half.fx, half.cy, half.width) == (from_file.fx / 2, from_file.cy / 2, 320)
    assert half.P_matrix[0, 0] == from_file.P_matrix[0, 0] / 2 and half.D == from_file.D
    uncalibrated = SimpleNamespace(K=[0.0] * 9, D=[], P=[0.0] * 12, R=[0.0] * 9, width=640, height=480,
                                   distortion_model="")
    with pytest.raises(CalibrationError, match="not calibrated"):
        intrinsics_from_camera_info(uncalibrated, origin="/robot/camera_node/camera_info")
    bad = tmp_path / "intrinsic.yaml"
    bad.write_text("camera_matrix:\n  data: [1, 2]\nimage_width: 640\nimage_height: 480\n")
    with pytest.raises(CalibrationError) as info:
        read_intrinsics(str(bad))
    assert str(info.value) == "%s: camera matrix K has 2 numbers; expected 9" % bad
    assert math.isclose(ground_plane(robot("csc22917")[1], from_file).height_m,
                        ground_plane(robot("csc22917")[1], intrinsics_from_camera_info(lower)).height_m)
