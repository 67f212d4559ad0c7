"""Where released weights live on this machine: the Hugging Face cache, never fetched silently.

The command ``python3 -m depth_estimation.weights fetch|where SPEC`` (:mod:`depth_estimation.tools.weights`)
downloads a spec's weights once (the Dockerfile does this at build time, so the robot needs no
network) or prints their local directory.
"""
from __future__ import annotations

import os
from typing import Optional

from huggingface_hub import constants, snapshot_download

from depth_estimation.models.specs import ARCHS, ModelNotFound

# Only configuration and safetensors weights: no pickles are ever downloaded or loaded.
ALLOW_PATTERNS = ["*.json", "*.safetensors"]


def cached_dir(hub_id: str) -> Optional[str]:
    """The local snapshot directory of ``hub_id`` with its weights, or None when not cached."""
    try:
        path = snapshot_download(hub_id, allow_patterns=ALLOW_PATTERNS, local_files_only=True)
    except Exception:  # LocalEntryNotFoundError and friends; their module moved between releases
        return None
    has_weights = any(f.endswith(".safetensors") for f in os.listdir(path))
    return path if has_weights and os.path.isfile(os.path.join(path, "config.json")) else None


def fetch(hub_id: str) -> str:
    """Download ``hub_id`` (config and safetensors only) into the cache; return its directory."""
    return snapshot_download(hub_id, allow_patterns=ALLOW_PATTERNS)


def resolve(hub_id: str, label: str) -> str:
    """The cached directory of ``hub_id``; ModelNotFound (one line, with the fix) when absent."""
    path = cached_dir(hub_id)
    if path is None:
        raise ModelNotFound(
            "model %s: weights %s are not in the local Hugging Face cache (%s); get them once with "
            "'python3 -m depth_estimation.weights fetch %s' where the hub is reachable, or run with "
            "model:=random:%s for untrained weights" % (label, hub_id, cache_root(), label,
                                                     _arch_of(label, hub_id)))
    return path


def _arch_of(label: str, hub_id: str) -> str:
    return next((a.name for a in ARCHS.values() if a.hub_id == hub_id), "da2-small")


def cache_root() -> str:
    return constants.HF_HUB_CACHE
