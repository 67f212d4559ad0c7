"""Cache keys by content: what a derived file (a quantized folder, an ONNX export) was made from.

A cache entry is named ``<spec sanitised>...-<short hash>``: readable, and the hash changes when
anything that changes the result does:

* the base weights (:func:`weights_fingerprint`): a local file or folder by its absolute path and
  the size and modification time of its weight files, so a copy elsewhere or rewritten (even
  only touched) weights get their own entry; released weights by the Hugging Face snapshot they
  resolve to (its folder names the commit); ``random:<arch>`` by the architecture and seed;
* a derived file's source file (:func:`file_fingerprint`: an int8 ONNX from its fp32 export);
* the settings (bits, group size, input size, opset, ONNX export target), given by the caller;
* the versions of the libraries that make the result (:func:`versions`).

Imports neither torch nor huggingface_hub at module level (the ``.onnx`` paths import this).
"""
from __future__ import annotations

import hashlib
import os
from importlib import metadata
from typing import List

from depth_estimation.models.specs import ModelNotFound, ModelSpec, parse_spec

# the files of a model folder whose content makes the model (configuration and weights)
WEIGHT_SUFFIXES = (".safetensors", ".json", ".pth", ".pt", ".bin", ".onnx")
RANDOM_SEED = 0  # da2.random_model and fastdepth.random_student build random:<arch> from seed 0


def _file_stats(path: str) -> List[str]:
    """``path`` (absolute, links resolved) and ``name:size:mtime_ns`` of its weight files."""
    path = os.path.realpath(os.path.expanduser(path))
    if os.path.isdir(path):
        files = sorted(n for n in os.listdir(path) if n.endswith(WEIGHT_SUFFIXES))
        folder = path
    elif os.path.isfile(path):
        folder, files = os.path.dirname(path), [os.path.basename(path)]
    else:
        return [path, "missing"]
    stats = [path]
    for name in files:
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:  # a dangling link in a cache folder
            continue
        if os.path.isfile(os.path.join(folder, name)):
            stats.append("%s:%d:%d" % (name, st.st_size, st.st_mtime_ns))
    return stats


def file_fingerprint(path: str) -> str:
    """What a file (or folder) on disk is: its absolute path and the size and modification time of
    its weight files, so a rewritten (even only touched) file gets its own cache entry."""
    return "|".join(_file_stats(path))


def weights_fingerprint(spec: ModelSpec) -> str:
    """What ``spec``'s weights are, without its quantization suffix (see the module doc)."""
    if spec.kind == "random":
        return "random:%s:seed=%d" % (spec.arch, RANDOM_SEED)
    if spec.path is not None:
        return "|".join(["%s:" % spec.kind] + _file_stats(spec.path))
    if spec.hub_id is not None:
        from depth_estimation.models import hub  # heavy (huggingface_hub): only hub specs need it

        snapshot = hub.cached_dir(spec.hub_id)  # its folder is named by the commit
        return "|".join(["hub:%s" % spec.hub_id] + (_file_stats(snapshot) if snapshot else ["not cached"]))
    return "%s:%s" % (spec.kind, spec.base)


def text_fingerprint(spec_text: str) -> str:
    """:func:`weights_fingerprint` of a spec's text; the text itself when it is no spec (yet)."""
    try:
        return weights_fingerprint(parse_spec(spec_text))
    except (ValueError, ModelNotFound):
        return "text:%s" % spec_text.strip()


def version(distribution: str) -> str:
    """The installed version of ``distribution`` (read from its metadata: nothing is imported)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"


def versions(*distributions: str) -> str:
    """``name=version`` of each of ``distributions``, for a cache key."""
    return ",".join("%s=%s" % (d, version(d)) for d in distributions)


def short_hash(*parts: object) -> str:
    """10 hex digits of the SHA-1 of ``parts``."""
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:10]
