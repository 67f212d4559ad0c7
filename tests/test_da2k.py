"""DA-2K pair accuracy on a synthetic DA-2K folder: oracle, inverse, constant, per scene, CLI."""
import json
import os

import cv2
import numpy as np
import pytest

from depth_estimation.evaluation import da2k

IMAGES = {"indoor/a.png": (40, 56), "indoor/b.jpg": (48, 64), "outdoor/c.png": (36, 60)}


def _oracle(shape, seed):
    """A disparity map with distinct values everywhere (larger = closer)."""
    rng = np.random.default_rng(seed)
    return (np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) + 0.5 * rng.random(shape)).astype(
        np.float32)[:, ::-1].copy()


@pytest.fixture(scope="module")
def da2k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("da2k")
    rng = np.random.default_rng(0)
    annotations, oracles = {}, {}
    for i, (image, shape) in enumerate(sorted(IMAGES.items())):
        os.makedirs(root / os.path.dirname(image), exist_ok=True)
        rgb = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        assert cv2.imwrite(str(root / image), rgb)
        oracle = _oracle(shape, i)
        oracles[image] = oracle
        pairs = []
        for _ in range(4 + i):
            p1 = [int(rng.integers(shape[0])), int(rng.integers(shape[1]))]
            p2 = [int(rng.integers(shape[0])), int(rng.integers(shape[1]))]
            while p2 == p1:
                p2 = [int(rng.integers(shape[0])), int(rng.integers(shape[1]))]
            closer = "point1" if oracle[tuple(p1)] > oracle[tuple(p2)] else "point2"
            pairs.append({"point1": p1, "point2": p2, "closer_point": closer})
        annotations[image] = pairs
    with open(root / "annotations.json", "w") as f:
        json.dump(annotations, f)
    return str(root), annotations, oracles


def _pairs(annotations, scene=None):
    return sum(len(v) for k, v in annotations.items() if scene is None or k.startswith(scene + "/"))


def test_oracle_inverse_constant(da2k_root):
    root, annotations, oracles = da2k_root
    total = _pairs(annotations)
    oracle = da2k.score(lambda im: oracles[im], root)
    assert oracle["accuracy"] == 1.0 and oracle["pairs"] == total
    assert da2k.score(lambda im: -oracles[im], root)["accuracy"] == 0.0
    assert da2k.score(lambda im: 1.0 / oracles[im], annotations, "depth")["accuracy"] == 1.0
    assert da2k.score(lambda im: oracles[im], annotations, "depth")["accuracy"] == 0.0
    const = da2k.score(lambda im: np.ones(IMAGES[im], np.float32), annotations)
    assert const["accuracy"] == 0.0 and const["pairs"] == total  # ties are wrong
    assert da2k.score(lambda im: np.ones(IMAGES[im]), annotations, "depth")["accuracy"] == 0.0


def test_per_scene(da2k_root):
    _root, annotations, oracles = da2k_root
    # right on indoor, wrong on outdoor
    result = da2k.score(lambda im: oracles[im] if im.startswith("indoor") else -oracles[im], annotations)
    n_in, n_out = _pairs(annotations, "indoor"), _pairs(annotations, "outdoor")
    assert set(result["per_scene"]) == {"indoor", "outdoor"}
    assert result["per_scene"]["indoor"] == {"accuracy": 1.0, "pairs": n_in, "correct": n_in}
    assert result["per_scene"]["outdoor"] == {"accuracy": 0.0, "pairs": n_out, "correct": 0}
    assert result["accuracy"] == pytest.approx(n_in / (n_in + n_out))


def test_points_are_row_col_and_checked(da2k_root):
    ann = {"s/x.png": [{"point1": [1, 5], "point2": [3, 0], "closer_point": "point1"}]}
    pred = np.zeros((4, 6), np.float32)
    pred[1, 5] = 1.0  # row 1, col 5
    assert da2k.score(lambda im: pred, ann)["accuracy"] == 1.0
    pred[3, 0] = 2.0  # now point2 is closer
    assert da2k.score(lambda im: pred, ann)["accuracy"] == 0.0
    with pytest.raises(ValueError):
        da2k.score(lambda im: np.zeros((2, 2)), ann)
    assert da2k.scene_of("indoor/sub/x.jpg") == "indoor" and da2k.scene_of("./x.jpg") == "."


def test_cli_predictions(da2k_root, tmp_path):
    root, annotations, oracles = da2k_root
    pred_dir = tmp_path / "pred"
    for image, oracle in oracles.items():
        path = da2k.prediction_path(str(pred_dir), image)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, 1.0 / oracle)  # depth
    out = tmp_path / "r.json"
    assert da2k.main(["--root", root, "--predictions", str(pred_dir), "--pred-kind", "depth",
                      "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["accuracy"] == 1.0 and result["pairs"] == _pairs(annotations)
    assert result["predictions"] == str(pred_dir) and result["model"] is None
    assert result["per_scene"]["outdoor"]["pairs"] == _pairs(annotations, "outdoor")
    assert da2k.main(["--root", root, "--predictions", str(pred_dir), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == 0.0  # read as disparity: all wrong
    # a prediction of the wrong size is refused
    np.save(da2k.prediction_path(str(pred_dir), "indoor/a.png"), np.zeros((5, 5), np.float32))
    assert da2k.main(["--root", root, "--predictions", str(pred_dir)]) == 1


def test_cli_model(da2k_root, tiny_dir, tmp_path):
    """The model run scores exactly what its own outputs say, pair by pair (counted here by hand)."""
    from depth_estimation.runtime.estimator import DepthEstimator
    root, annotations, _ = da2k_root
    out = tmp_path / "m.json"
    assert da2k.main(["--root", root, "--model", tiny_dir, "--input-size", "28", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    estimator = DepthEstimator(tiny_dir, input_size=28, backend="auto").load()  # the CLI's default backend
    correct = {"indoor": 0, "outdoor": 0}
    for image, pairs in annotations.items():
        disp = estimator.infer(cv2.cvtColor(cv2.imread(os.path.join(root, image)), cv2.COLOR_BGR2RGB))
        for pair in pairs:
            closer = tuple(pair[pair["closer_point"]])
            other = tuple(pair["point2" if pair["closer_point"] == "point1" else "point1"])
            correct[image.split("/")[0]] += int(disp[closer] > disp[other])
    n_in, n_out = _pairs(annotations, "indoor"), _pairs(annotations, "outdoor")
    assert result["correct"] == correct["indoor"] + correct["outdoor"]
    assert result["accuracy"] == (correct["indoor"] + correct["outdoor"]) / (n_in + n_out)
    assert result["per_scene"] == {"indoor": {"accuracy": correct["indoor"] / n_in, "pairs": n_in,
                                              "correct": correct["indoor"]},
                                   "outdoor": {"accuracy": correct["outdoor"] / n_out, "pairs": n_out,
                                               "correct": correct["outdoor"]}}
    assert result["pairs"] == n_in + n_out == 15 and result["model"] == tiny_dir


ANN4 = {  # four pairs on two 3x4 images; the maps below put the true closer point closer on three
    "indoor/a.png": [{"point1": [0, 0], "point2": [2, 3], "closer_point": "point1"},
                     {"point1": [1, 1], "point2": [0, 3], "closer_point": "point2"}],
    "outdoor/b.png": [{"point1": [2, 0], "point2": [0, 2], "closer_point": "point1"},
                      {"point1": [1, 2], "point2": [2, 2], "closer_point": "point2"}],
}


def _disparity_right_on_three():
    a = np.zeros((3, 4), np.float32)
    a[0, 0], a[2, 3] = 5.0, 1.0  # right: point1 larger
    a[1, 1], a[0, 3] = 2.0, 4.0  # right: point2 larger
    b = np.zeros((3, 4), np.float32)
    b[2, 0], b[0, 2] = 3.0, 1.0  # right
    b[1, 2], b[2, 2] = 6.0, 2.0  # wrong: point2 is the closer one but has the smaller disparity
    return {"indoor/a.png": a, "outdoor/b.png": b}


def test_exact_accuracy_three_of_four():
    maps = _disparity_right_on_three()
    result = da2k.score(lambda im: maps[im], ANN4)
    assert (result["accuracy"], result["pairs"], result["correct"]) == (0.75, 4, 3)
    assert result["per_scene"] == {"indoor": {"accuracy": 1.0, "pairs": 2, "correct": 2},
                                   "outdoor": {"accuracy": 0.5, "pairs": 2, "correct": 1}}
    # the same order as depth (1 / disparity: smaller = closer) scores the same
    depth = {im: 1.0 / np.maximum(m, 1e-3) for im, m in maps.items()}
    assert da2k.score(lambda im: depth[im], ANN4, "depth")["per_scene"] == result["per_scene"]
    # the disparity maps read as depth: the order flips, so exactly the fourth pair is right
    flipped = da2k.score(lambda im: maps[im], ANN4, "depth")
    assert (flipped["accuracy"], flipped["correct"]) == (0.25, 1)
    assert flipped["per_scene"] == {"indoor": {"accuracy": 0.0, "pairs": 2, "correct": 0},
                                    "outdoor": {"accuracy": 0.5, "pairs": 2, "correct": 1}}
    # a tie on one right pair makes it wrong: 2 of 4
    maps["indoor/a.png"][2, 3] = 5.0
    tied = da2k.score(lambda im: maps[im], ANN4)
    assert tied["accuracy"] == 0.5
    assert tied["per_scene"]["indoor"] == {"accuracy": 0.5, "pairs": 2, "correct": 1}


def test_cli_exact_accuracy_three_of_four(tmp_path):
    root, pred_dir = tmp_path / "da2k", tmp_path / "pred"
    for image, disp in _disparity_right_on_three().items():
        os.makedirs(root / os.path.dirname(image), exist_ok=True)
        assert cv2.imwrite(str(root / image), np.zeros((3, 4, 3), np.uint8))
        os.makedirs(pred_dir / os.path.dirname(image), exist_ok=True)
        np.save(da2k.prediction_path(str(pred_dir), image), disp)
    (root / "annotations.json").write_text(json.dumps(ANN4))
    out = tmp_path / "r.json"
    assert da2k.main(["--root", str(root), "--predictions", str(pred_dir), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["accuracy"], result["pairs"], result["correct"]) == (0.75, 4, 3)
    assert result["per_scene"] == {"indoor": {"accuracy": 1.0, "pairs": 2, "correct": 2},
                                   "outdoor": {"accuracy": 0.5, "pairs": 2, "correct": 1}}


def test_image_size_from_the_header_else_decoded(tmp_path, monkeypatch):
    from depth_estimation.io.images import header_size, image_size
    png = cv2.imencode(".png", np.zeros((30, 50, 3), np.uint8))[1].tobytes()
    jpeg = cv2.imencode(".jpg", np.zeros((31, 17, 3), np.uint8))[1].tobytes()
    bmp = cv2.imencode(".bmp", np.zeros((12, 9, 3), np.uint8))[1].tobytes()
    for name, data in (("a.png", png), ("b.jpg", jpeg), ("c.bmp", bmp)):
        (tmp_path / name).write_bytes(data)
    assert image_size(bmp) == (12, 9) and da2k._image_size(str(tmp_path / "c.bmp")) == (12, 9)  # decoded
    app0_end = 4 + int.from_bytes(jpeg[4:6], "big")
    odd = jpeg[:app0_end] + b"\x00\x00" + jpeg[app0_end:]  # junk between segments: OpenCV still reads it
    with pytest.raises(ValueError):
        header_size(odd, "jpeg")
    assert image_size(odd) == (31, 17)  # decoded when the header is odd
    with pytest.raises(ValueError):  # neither a readable header nor decodable
        image_size(png[:12] + b"XXXX" + png[16:])
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded an image with a readable header"))
    assert image_size(png) == (30, 50) and image_size(jpeg) == (31, 17)
    assert da2k._image_size(str(tmp_path / "a.png")) == (30, 50)
    assert da2k._image_size(str(tmp_path / "b.jpg")) == (31, 17)


def _with_orientation(jpeg: bytes, orientation: int, order: str = "MM") -> bytes:
    """``jpeg`` with an EXIF APP1 segment holding only the orientation tag (little or big endian)."""
    import struct

    e = ">" if order == "MM" else "<"
    tiff = (order.encode() + struct.pack(e + "HI", 42, 8) + struct.pack(e + "H", 1)
            + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_one_orientation_rule_the_image_as_shown_for_the_model_and_the_prediction_size(tmp_path):
    from depth_estimation.io.images import exif_orientation, image_size

    stored = np.zeros((40, 56, 3), np.uint8)
    stored[:8, :20] = 255
    jpeg = cv2.imencode(".jpg", stored)[1].tobytes()
    for order in ("MM", "II"):
        turned = _with_orientation(jpeg, 6, order)
        assert exif_orientation(turned) == 6 and image_size(turned) == (40, 56)
        assert image_size(turned, oriented=True) == (56, 40) == cv2.imdecode(
            np.frombuffer(turned, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    assert exif_orientation(_with_orientation(jpeg, 3)) == 3 and image_size(_with_orientation(jpeg, 3), True) \
        == (40, 56)
    assert exif_orientation(jpeg) == 1 and exif_orientation(b"\xff\xd8\xff\xe1\x00\x08Exif") == 1
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "t.jpg").write_bytes(_with_orientation(jpeg, 6))
    seen = []

    class Estimator:
        def infer(self, rgb):
            seen.append(rgb.shape[:2])
            return np.zeros(rgb.shape[:2], np.float32)

    shown = da2k.from_model(str(tmp_path), Estimator())("scene/t.jpg").shape
    assert seen == [(56, 40)] and shown == (56, 40)  # the model sees the image as shown
    preds = tmp_path / "preds"
    (preds / "scene").mkdir(parents=True)
    np.save(str(preds / "scene" / "t.npy"), np.zeros(shown, np.float32))
    assert da2k.from_directory(str(tmp_path), str(preds))("scene/t.jpg").shape == shown  # and the same size
    np.save(str(preds / "scene" / "t.npy"), np.zeros((40, 56), np.float32))
    with pytest.raises(ValueError, match="56x40"):
        da2k.from_directory(str(tmp_path), str(preds))("scene/t.jpg")


def test_cli_runtime_options_are_the_shared_ones(da2k_root):
    root = da2k_root[0]
    args = da2k.build_parser().parse_args(["--root", root, "--model", "m", "--device", "cpu", "--threads", "3",
                                           "--input-size", "0"])
    assert (args.backend, args.device, args.threads, args.input_size, args.json) == ("auto", "cpu", 3, 0, None)
    with pytest.raises(SystemExit):  # exactly one source
        da2k.build_parser().parse_args(["--root", root])
