"""Preprocessing, inference, decoding and colorization: what the node does to every frame."""
import cv2
import numpy as np
import pytest
import torch

from depth_estimation.framepath import frames
from depth_estimation.runtime import preprocess
from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.runtime.estimator import DepthEstimator
from depth_fixtures import bad_frames


@pytest.mark.parametrize("h, w, short, expected", [
    (480, 640, 518, (518, 686)),   # DB21M camera at the model's native size
    (720, 1280, 308, (308, 546)),
    (640, 480, 518, (686, 518)),   # portrait keeps its orientation
    (480, 640, 300, (294, 392)),   # a short side that is no multiple of 14 is rounded to one
])
def test_input_shape_keeps_aspect_with_sides_multiple_of_14(h, w, short, expected):
    got = preprocess.input_shape(h, w, short)
    assert got == expected
    assert got[0] % 14 == 0 and got[1] % 14 == 0
    assert abs(got[1] / got[0] - w / h) < 0.03


def test_to_tensor_normalizes_with_imagenet_statistics():
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 255
    x = preprocess.to_tensor(rgb, 28)
    assert x.shape == (1, 3, 28, 28) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), (np.array([1.0, 0, 0]) - preprocess.IMAGENET_MEAN)
                               / preprocess.IMAGENET_STD, rtol=1e-5)


def test_output_returns_to_frame_size():
    out = preprocess.to_frame_size(torch.arange(12.0).reshape(1, 3, 4), 30, 40)
    assert out.shape == (30, 40) and out.dtype == np.float32
    assert out[0, 0] < out[-1, -1]  # orientation kept


def test_estimator_on_a_real_frame(tiny_dir, tum_rgb):
    est = DepthEstimator(tiny_dir, input_size=140).load()
    depth = est.infer(tum_rgb)
    assert depth.shape == tum_rgb.shape[:2] and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth >= 0).all()  # relative inverse depth after ReLU
    assert est.device == "cpu"
    for stage in ("preprocess", "infer", "postprocess"):
        assert est.timer.percentile(stage, 50) > 0


def test_estimator_refuses_wrong_input(tiny_dir):
    est = DepthEstimator(tiny_dir, input_size=28).load()
    with pytest.raises(ValueError, match="RGB uint8"):
        est.infer(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="backend"):
        DepthEstimator(tiny_dir, backend="tensorflow")
    with pytest.raises(RuntimeError, match="load"):
        DepthEstimator(tiny_dir).infer(np.zeros((10, 10, 3), np.uint8))


def test_decode_real_jpeg_and_png(real_jpeg):
    image = frames.decode(real_jpeg, "jpg")
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
    png = cv2.imencode(".png", image[:100, :120])[1].tobytes()
    assert frames.decode(png, "png").shape == (100, 120, 3)
    gray = cv2.imencode(".jpg", np.full((40, 50), 99, np.uint8))[1].tobytes()
    assert frames.decode(gray).shape == (40, 50, 3)


def test_every_bad_frame_is_rejected_with_its_kind(real_jpeg):
    for kind, data in bad_frames(real_jpeg).items():
        with pytest.raises(frames.RejectedFrame) as err:
            frames.decode(data, "jpeg")
        assert err.value.kind == kind, (kind, str(err.value))


def test_oversized_frame_is_refused_from_its_header_without_decoding(monkeypatch, real_jpeg):
    huge = bad_frames(real_jpeg)["too_large"]
    assert frames.header_size(huge, "jpeg") == (10000, 10000)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a 10000x10000 frame"))
    with pytest.raises(frames.RejectedFrame, match="too_large"):
        frames.decode(huge)


def test_size_limits_are_parameters(real_jpeg):
    with pytest.raises(frames.RejectedFrame, match="too_large"):
        frames.decode(real_jpeg, max_side=1000)
    with pytest.raises(frames.RejectedFrame, match="too_small"):
        frames.decode(real_jpeg, min_side=800)


def test_colorize_near_is_bright_and_ranges_work():
    values = np.tile(np.linspace(0, 10, 100, dtype=np.float32), (5, 1))
    color = Colorizer("inferno")(values)
    assert color.shape == (5, 100, 3) and color.dtype == np.uint8
    luminance = color.astype(float).sum(axis=2)[0]
    assert luminance[-1] > luminance[0]  # larger inverse depth (closer) is brighter
    fixed = Colorizer("inferno", "fixed", vmin=0.0, vmax=20.0)(values)
    assert fixed[0, -1].sum() < color[0, -1].sum()  # 10 is mid-range of 0..20, top of its own range
    a = Colorizer("inferno", "percentile", percentiles=(0, 100))(values)
    b = Colorizer("inferno", "percentile", percentiles=(0, 100))(values * 3 + 7)
    np.testing.assert_array_equal(a, b)  # per-frame stretch is invariant to scale and shift


def test_colorize_rejects_bad_settings():
    with pytest.raises(ValueError, match="turbo"):
        Colorizer("no_such_map")
    with pytest.raises(ValueError, match="vmin"):
        Colorizer(range_mode="fixed")
    with pytest.raises(ValueError, match="percentiles"):
        Colorizer(percentiles=(90, 10))
