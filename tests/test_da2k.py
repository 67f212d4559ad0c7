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
    root, annotations, _ = da2k_root
    out = tmp_path / "m.json"
    assert da2k.main(["--root", root, "--model", tiny_dir, "--input-size", "28", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["accuracy"] <= 1.0 and result["pairs"] == _pairs(annotations)
    assert result["model"] == tiny_dir and set(result["per_scene"]) == {"indoor", "outdoor"}
