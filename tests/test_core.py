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


def test_normalize_uses_imagenet_statistics():
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = 255
    x = preprocess.normalize(rgb, 28, 28)
    assert x.shape == (1, 3, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], (np.array([1.0, 0, 0]) - preprocess.IMAGENET_MEAN)
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


def test_estimator_input_size_0_or_none_is_the_models_own(tiny_dir):
    for size in (0, None):
        est = DepthEstimator(tiny_dir, input_size=size)
        assert est.input_size is None
        assert est.load().input_size == est.net.default_input_size
    with pytest.raises(ValueError, match="at least 14"):
        DepthEstimator(tiny_dir, input_size=7)
    with pytest.raises(ValueError, match="positive"):
        DepthEstimator(tiny_dir, input_size=-14)


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


@pytest.mark.parametrize("spec, requested, effective", [
    ("tiny", 20, 14),    # Depth-Anything-V2: multiples of 14, nearest
    ("tiny", 27, 28),
    ("tiny", 14, 14),
    ("random:fastdepth-mnv3", 100, 96),  # the student: multiples of 32
    ("random:fastdepth-mnv3", 14, 32),   # at least one multiple
])
def test_estimator_reports_the_input_size_it_really_uses(spec, requested, effective, tiny_dir, caplog):
    caplog.set_level("WARNING", logger="depth_estimation.runtime.estimator")
    est = DepthEstimator(tiny_dir if spec == "tiny" else spec, input_size=requested).load()
    assert est.input_size == effective
    assert min(est.input_hw(480, 640)) == effective  # what the network sees
    changed = [r for r in caplog.records if "input size" in r.getMessage()]
    assert bool(changed) == (requested != effective)
    if changed:
        assert "%d" % requested in changed[0].getMessage() and "%d" % effective in changed[0].getMessage()


def test_fit_inside_keeps_the_aspect_ratio():
    assert preprocess.fit_inside(100, 100, 56, 112) == (56, 56)
    assert preprocess.fit_inside(480, 640, 56, 56) == (42, 56)
    assert preprocess.fit_inside(640, 480, 56, 112) == (56, 42)
    assert preprocess.fit_inside(10, 1000, 56, 112) == (1, 112)  # never below one pixel
    assert preprocess.fit_inside(56, 112, 56, 112) == (56, 112)


def test_letterbox_pads_around_the_centred_frame_and_unletterbox_crops_it_back():
    rgb = np.zeros((100, 100, 3), np.uint8)
    rgb[:, 30:] = 255  # a vertical edge at 30 % of the width
    x, window = preprocess.letterbox(rgb, (56, 112), (56, 56))
    assert x.shape == (1, 3, 56, 112) and x.dtype == np.float32
    assert window == (0, 28, 56, 56)
    np.testing.assert_array_equal(x[..., :28], 0)   # padding: the ImageNet mean (0 once normalized)
    np.testing.assert_array_equal(x[..., 84:], 0)
    np.testing.assert_array_equal(x[..., 28:84], preprocess.normalize(rgb, 56, 56))
    # a model returning its input's channel 0 gives the frame back, undistorted, padding cropped
    out = preprocess.unletterbox(x[:, 0], window, (56, 112), 100, 100)
    assert out.shape == (100, 100)
    want = preprocess.normalize(rgb, 100, 100)[0, 0]
    assert np.abs(out[:, :27] - want[:, :27]).max() < 1e-5 and np.abs(out[:, 33:] - want[:, 33:]).max() < 1e-5
    # an output at half the input resolution: the window scales with it
    half = x[:, 0, ::2, ::2]
    from_half = preprocess.unletterbox(half, window, (56, 112), 100, 100)
    assert from_half.shape == (100, 100)
    np.testing.assert_allclose(from_half[:, -1], want[0, -1], rtol=1e-5)
    np.testing.assert_allclose(from_half[:, 0], want[0, 0], rtol=1e-5)


def test_letterbox_of_a_portrait_frame_in_a_landscape_box():
    rgb = np.full((80, 60, 3), 255, np.uint8)
    x, window = preprocess.letterbox(rgb, (56, 112), preprocess.fit_inside(80, 60, 56, 112))
    assert window == (0, 35, 56, 42)
    content = np.abs(x[0, 0]) > 0
    assert content.sum(axis=1).tolist() == [42] * 56 and content.any(axis=0).sum() == 42


@pytest.mark.parametrize("short", [56, 308, 518])
def test_bucketed_input_shapes_are_few_and_hold_the_models_own_shape(short):
    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(100, 2000, (200, 2))]
    sizes = [(h, w) for h, w in sizes if max(h, w) <= 4 * min(h, w)]  # the node's max_aspect
    shapes = set()
    for h, w in sizes:
        box = preprocess.bucket_shape(h, w, short)
        natural = preprocess.input_shape(h, w, short)
        assert box[0] >= natural[0] and box[1] >= natural[1]  # the model's own input fits inside
        assert min(box) == min(natural) and box[0] % 14 == 0 and box[1] % 14 == 0
        assert box[0] >= box[1] if h > w else box[0] <= box[1]  # the frame's orientation
        assert max(box) <= 1.25 * max(natural) + 14  # at most a quarter of padding
        shapes.add(box)
    assert len(shapes) <= 2 * len(preprocess.ASPECT_BUCKETS)
    assert preprocess.bucket_shape(110, 100, 56) == (70, 56)  # portrait, though its own shape is 56x56
    # the cameras' own aspect ratios (4:3, 16:9, 5:4, 3:2, square) need no padding at all
    for h, w in ((480, 640), (720, 1280), (1024, 1280), (640, 960), (500, 500), (640, 480)):
        assert preprocess.bucket_shape(h, w, short) == preprocess.input_shape(h, w, short), (h, w)
