"""Shared fixtures: the library on sys.path (plain `pytest` works without env.sh), tiny models, real frames."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "packages", "depth_estimation", "include")
if INCLUDE not in sys.path:
    sys.path.insert(0, INCLUDE)

SHARED_REAL = os.path.join(os.path.dirname(ROOT), "shared", "data", "real")
REAL_BAG = os.path.join(ROOT, "assets", "recordings", "raspicam_aruco_marker.bag")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and OpenMP spinning is slow on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random Depth-Anything-V2 saved in Hugging Face format."""
    from depth_fixtures import save_tiny_da2

    return save_tiny_da2(str(tmp_path_factory.mktemp("models") / "tiny_da2"))


@pytest.fixture(scope="session")
def real_jpeg():
    """The real 1280x720 camera frame of the shipped recording (JPEG bytes)."""
    from depth_estimation.io.bags import read_camera_frames

    return read_camera_frames(REAL_BAG)[0].data


@pytest.fixture(scope="session")
def tum_rgb():
    """A real 640x480 Kinect RGB frame (TUM fr1/desk, the copy in assets/frames), as RGB uint8."""
    import cv2

    path = os.path.join(ROOT, "assets", "frames", "rgb_1.png")
    bgr = cv2.imread(path)
    assert bgr is not None and bgr.shape == (480, 640, 3), "%s is missing or not 640x480" % path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty, offline Hugging Face cache for this test."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    return cache


@pytest.fixture(scope="session", autouse=True)
def _pinned_transformers():
    """In the Python-3.8-pins run, make sure the pinned transformers is the one imported."""
    expected = os.environ.get("DEPTH_EXPECT_TRANSFORMERS")
    if expected:
        import transformers

        assert transformers.__version__ == expected, transformers.__version__
