"""Where things are: this package's folders in the checkout (or image) and its cache."""
from __future__ import annotations

import os

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
REPO_DIR = os.path.dirname(os.path.dirname(PACKAGE_DIR))
ASSETS_DIR = os.path.join(REPO_DIR, "assets")


def cache_dir(*parts: str) -> str:
    """This package's cache (quantized models, ONNX exports, engines): $DEPTH_ESTIMATION_CACHE or
    ~/.cache/depth_estimation."""
    root = os.environ.get("DEPTH_ESTIMATION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                      "depth_estimation")
    return os.path.join(root, *parts)
