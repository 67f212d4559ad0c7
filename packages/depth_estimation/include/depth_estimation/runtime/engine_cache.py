"""Where TensorRT engines are kept, and which engine file belongs to which build (no TensorRT needed).

An engine is valid for one ONNX file's content, one TensorRT version, one GPU, one precision and
one builder workspace. :func:`engine_key` collects those; the engine file's name carries a hash of
the key (``<onnx stem>-<precision>-<hash>.engine``) and a JSON sidecar ``<engine>.json`` holds the
key itself plus the engine file's own SHA-256. :func:`cached_engine` returns the engine's bytes only
when the sidecar matches the key and the bytes match the sidecar; anything else (another
TensorRT, another GPU, a changed ONNX file, a truncated or foreign file) is rebuilt, never loaded.

The folder (:func:`engine_dir`): the ``engine_dir`` option; else ``$DEPTH_ESTIMATION_ENGINES``;
else, on a Duckiebot (``/data/config`` exists, the robot's persistent mount, which
``dts devel run`` keeps across the container's ``--rm``), ``/data/config/depth_estimation/engines``;
else ``$DEPTH_ESTIMATION_CACHE/engines`` or ``~/.cache/depth_estimation/engines``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, Optional

from depth_estimation.io.atomic import write_bytes, write_json
from depth_estimation.io.paths import cache_dir

log = logging.getLogger(__name__)

ROBOT_CONFIG = "/data/config"  # the Duckiebot's persistent configuration mount
ROBOT_ENGINE_DIR = os.path.join(ROBOT_CONFIG, "depth_estimation", "engines")
ENGINE_DIR_ENV = "DEPTH_ESTIMATION_ENGINES"
# TensorRT's builder scratch memory: the Jetson Nano's 2 GB are shared by CPU and GPU (and ROS, the
# camera, the rest of the robot), so the builder gets 256 MB; larger engines may build faster.
DEFAULT_WORKSPACE_MB = 256
SIDECAR_VERSION = 1
_HASH_CHUNK = 1 << 20


def engine_dir(configured: Optional[str] = None) -> str:
    """The engine folder (see the module docstring for the order)."""
    if configured:
        return os.path.expanduser(configured)
    if os.environ.get(ENGINE_DIR_ENV):
        return os.path.expanduser(os.environ[ENGINE_DIR_ENV])
    if os.path.isdir(ROBOT_CONFIG):
        return ROBOT_ENGINE_DIR
    return cache_dir("engines")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def engine_key(onnx_sha256: str, tensorrt_version: str, gpu: str, precision: str,
               workspace_mb: int) -> Dict[str, Any]:
    """What an engine was built from and for; two builds with equal keys are interchangeable."""
    if precision not in ("fp16", "fp32"):
        raise ValueError("precision %r; use fp16 or fp32" % precision)
    return {"version": SIDECAR_VERSION, "onnx_sha256": onnx_sha256, "tensorrt": str(tensorrt_version),
            "gpu": str(gpu), "precision": precision, "workspace_mb": int(workspace_mb)}


def key_hash(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def engine_path(folder: str, onnx_path: str, key: Dict[str, Any]) -> str:
    """``<folder>/<onnx stem>-<precision>-<key hash>.engine``."""
    stem = os.path.splitext(os.path.basename(onnx_path))[0]
    return os.path.join(folder, "%s-%s-%s.engine" % (stem, key["precision"], key_hash(key)))


def sidecar_path(path: str) -> str:
    return path + ".json"


def _stale(path: str, key: Dict[str, Any]) -> Optional[str]:
    """Why the engine at ``path`` is not the build of ``key`` (None: it is, bytes unchecked)."""
    if not os.path.isfile(path):
        return "no engine yet"
    try:
        with open(sidecar_path(path)) as f:
            recorded = json.load(f)
    except (OSError, ValueError) as exc:
        return "no readable sidecar %s (%s)" % (sidecar_path(path), exc.__class__.__name__)
    got = recorded.get("key") if isinstance(recorded, dict) else None
    if not isinstance(got, dict):
        return "sidecar without a key"
    differing = sorted(k for k in set(key) | set(got) if key.get(k) != got.get(k))
    if differing:
        return "built for another %s" % ", ".join(differing)
    return None


def cached_engine(path: str, key: Dict[str, Any]) -> Optional[bytes]:
    """The engine bytes at ``path`` when its sidecar records ``key`` and the bytes' SHA-256; else
    None, with a log line saying why it is rebuilt (nothing when there is simply no engine yet)."""
    why = _stale(path, key)
    if why is None:
        with open(path, "rb") as f:
            data = f.read()
        with open(sidecar_path(path)) as f:
            recorded = json.load(f)
        if hashlib.sha256(data).hexdigest() == recorded.get("engine_sha256"):
            return data
        why = "its bytes differ from the ones recorded (truncated or replaced)"
    if why != "no engine yet":
        log.warning("tensorrt: not loading %s: %s; rebuilding it", path, why)
    return None


def store_engine(path: str, key: Dict[str, Any], data: bytes, seconds: float, onnx_path: str) -> bool:
    """Write the engine, then its sidecar (a reader trusts an engine only with a matching sidecar, so
    a crash between the two leaves a file that is rebuilt). False (logged) when the folder is not
    writable: the engine is then rebuilt on every start."""
    try:
        write_bytes(path, data)
        write_json(sidecar_path(path), {"key": key, "engine_sha256": hashlib.sha256(data).hexdigest(),
                                        "engine_bytes": len(data), "onnx": os.path.abspath(onnx_path),
                                        "build_seconds": round(float(seconds), 1)})
    except OSError as exc:
        log.warning("tensorrt: cannot save the engine to %s (%s); it is rebuilt on every start (set the "
                    "engine folder to a writable place)", path, exc)
        return False
    return True
