"""Where things are: this package's folders in the checkout (or image) and its cache."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Set, Tuple

# realpath: a catkin workspace links the package in (src/depth_estimation -> the checkout's package)
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
REPO_DIR = os.path.dirname(os.path.dirname(PACKAGE_DIR))
ASSETS_DIR = os.path.join(REPO_DIR, "assets")


def cache_dir(*parts: str) -> str:
    """This package's cache (quantized models, ONNX exports, engines): $DEPTH_ESTIMATION_CACHE or
    ~/.cache/depth_estimation."""
    root = os.environ.get("DEPTH_ESTIMATION_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                      "depth_estimation")
    return os.path.join(root, *parts)


def file_bytes(path: str, suffixes: Optional[Sequence[str]] = None) -> int:
    """Bytes stored on disk at ``path``: a file's size, or a folder's files' sizes summed recursively
    (only names ending in one of ``suffixes`` when given). Each stored file counts once, however many
    names it has (hard links, the Hugging Face cache's symlinks into its blobs)."""
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        return os.path.getsize(path)
    seen: Set[Tuple[int, int]] = set()
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            if suffixes is not None and not name.endswith(tuple(suffixes)):
                continue
            try:
                stat = os.stat(os.path.join(root, name))
            except FileNotFoundError:  # a dangling symlink stores nothing
                continue
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total
