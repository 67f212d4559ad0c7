"""Model specs: the one name a model variant has everywhere (node parameter, benchmark, tables).

A spec is one of

* ``da2-small`` / ``da2-base`` / ``da2-large``: Depth-Anything-V2 with its released weights
  (Hugging Face id in :data:`ARCHS`), taken from the local cache (see :mod:`.weights`);
* ``random:<arch>``: the same architecture with random weights (untrained; for tests,
  benchmarks and offline demos);
* ``fastdepth-duckietown``: the FastDepth student trained on the Duckietown simulator, a model
  folder shipped in the repository (``assets/models/fastdepth-duckietown``: config, safetensors,
  model card), so it needs no download;
* a Hugging Face hub id (``owner/name``), a local directory in Hugging Face format, or an
  original ``depth_anything_v2_vit{s,b,l}.pth`` checkpoint of the authors.

A Depth-Anything-V2 spec takes at most one quantization suffix:

* ``@hqqN`` / ``@hqqN-dq`` (N = 8, 4, 3, 2, 1): HQQ weights of the backbone's linears, packed
  (dequantized layer by layer in every forward) or dequantized at load; any backend (ONNX and
  TensorRT get the dequantized values). On a CPU this saves memory and disk, not time.
* ``@int8``: ONNX Runtime's dynamic int8 quantization of the exported model's backbone MatMul
  weights (per output channel; activations quantized per frame), made from the fp32 export and
  cached (:mod:`depth_estimation.runtime.ort_quant`); backend ``onnxruntime`` only.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from depth_estimation.io.paths import ASSETS_DIR


@dataclass(frozen=True)
class Da2Arch:
    """Depth-Anything-V2 architecture numbers (REFERENCE.md section 2)."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    out_indices: Tuple[int, ...]  # transformers counts the embeddings as hidden state 0
    neck_hidden_sizes: Tuple[int, ...]
    fusion_hidden_size: int
    hub_id: str
    original_file: str
    licence: str


ARCHS: Dict[str, Da2Arch] = {
    a.name: a
    for a in (
        Da2Arch("da2-small", 384, 12, 6, (3, 6, 9, 12), (48, 96, 192, 384), 64,
                "depth-anything/Depth-Anything-V2-Small-hf", "depth_anything_v2_vits.pth", "Apache-2.0"),
        Da2Arch("da2-base", 768, 12, 12, (3, 6, 9, 12), (96, 192, 384, 768), 128,
                "depth-anything/Depth-Anything-V2-Base-hf", "depth_anything_v2_vitb.pth", "CC-BY-NC-4.0"),
        Da2Arch("da2-large", 1024, 24, 16, (5, 12, 18, 24), (256, 512, 1024, 1024), 256,
                "depth-anything/Depth-Anything-V2-Large-hf", "depth_anything_v2_vitl.pth", "CC-BY-NC-4.0"),
    )
}

RANDOM_PREFIX = "random:"


class ModelNotFound(RuntimeError):
    """The model a spec names is not on this machine; the message says how to get it."""


STUDENTS = ("fastdepth-mnv3",)
# student folders shipped in the repository: spec -> folder (the architecture is STUDENTS[0])
SHIPPED = {"fastdepth-duckietown": os.path.join(ASSETS_DIR, "models", "fastdepth-duckietown")}
SHIPPED_FILES = ("config.json", "model.safetensors")
HQQ_BITS = (8, 4, 3, 2, 1)
# ONNX Runtime quantizations of the exported file: suffix -> bits (runtime/ort_quant.py makes them)
ORT_QUANTS: Dict[str, int] = {"int8": 8}


@dataclass(frozen=True)
class Quant:
    """``@hqq4`` (packed: dequantized layer by layer in the forward), ``@hqq4-dq`` (expanded at load)
    or ``@int8`` (``method`` "ort": ONNX Runtime's int8 of the export, per output channel:
    ``group_size`` 0)."""

    bits: int
    dequantize: bool
    group_size: int = 64
    method: str = "hqq"  # "hqq" | "ort"

    @property
    def suffix(self) -> str:
        if self.method == "ort":
            return "@int%d" % self.bits
        return "@hqq%d%s" % (self.bits, "-dq" if self.dequantize else "")

    @property
    def backend(self) -> Optional[str]:
        """The one backend that runs this quantization; None: any."""
        return "onnxruntime" if self.method == "ort" else None


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``text`` is the string users type and every table shows."""

    text: str
    # "random" | "arch" | "hub" | "hf_dir" | "original" | "student" | "student_dir" | "quantized_dir" | "onnx"
    kind: str
    arch: Optional[str] = None  # key of ARCHS or STUDENTS when known
    path: Optional[str] = None  # local file or directory
    hub_id: Optional[str] = None
    quant: Optional[Quant] = None

    @property
    def untrained(self) -> bool:
        return self.kind == "random"

    @property
    def family(self) -> str:
        """"fastdepth" for the student, "da2" for Depth-Anything-V2, "onnx" for an exported file."""
        if self.kind == "onnx":
            return "onnx"
        return "fastdepth" if self.arch in STUDENTS or self.kind == "student_dir" else "da2"

    @property
    def base(self) -> str:
        """The spec without its quantization suffix."""
        return self.text.split("@")[0]


def _parse_quant(text: str, option: str) -> Quant:
    if option in ORT_QUANTS:
        return Quant(ORT_QUANTS[option], False, 0, "ort")
    match = re.fullmatch(r"hqq(\d)(-dq)?", option)
    if not match or int(match.group(1)) not in HQQ_BITS:
        ort = "/".join("@" + q for q in ORT_QUANTS)
        raise ValueError("model spec %r: unknown suffix @%s; use @hqqN (packed) or @hqqN-dq (dequantized "
                         "at load), N in %s, or %s (ONNX Runtime)"
                         % (text, option, "/".join(map(str, HQQ_BITS)), ort))
    return Quant(int(match.group(1)), bool(match.group(2)))


def parse_spec(text: str) -> ModelSpec:
    """Parse a model spec string; raise ValueError with the accepted forms when it is none."""
    text = text.strip()
    if not text:
        raise ValueError("empty model spec; " + SPEC_HELP)
    base, *options = text.split("@")
    if len(options) > 1:
        raise ValueError("model spec %r: at most one @suffix; %s" % (text, SPEC_HELP))
    spec = _parse_base(text, base)
    if options:
        quant = _parse_quant(text, options[0])
        if spec.family != "da2" or spec.kind == "quantized_dir":
            raise ValueError("model spec %r: %s quantizes Depth-Anything-V2 backbones, not %s"
                             % (text, "ONNX Runtime's @int8" if quant.method == "ort" else "HQQ", base))
        spec = ModelSpec(text, spec.kind, spec.arch, spec.path, spec.hub_id, quant)
    return spec


def _parse_base(text: str, base: str) -> ModelSpec:
    if base.startswith(RANDOM_PREFIX):
        arch = base[len(RANDOM_PREFIX):]
        if arch not in ARCHS and arch not in STUDENTS:
            raise ValueError("model spec %r: unknown architecture %r; known: %s"
                             % (text, arch, ", ".join(sorted(ARCHS) + list(STUDENTS))))
        return ModelSpec(text, "random", arch=arch)
    if base in ARCHS:
        return ModelSpec(text, "arch", arch=base, hub_id=ARCHS[base].hub_id)
    if base in STUDENTS:
        return ModelSpec(text, "student", arch=base)
    if base in SHIPPED:
        return _shipped(text, base)
    expanded = os.path.expanduser(base)
    if os.path.isdir(expanded):
        return ModelSpec(text, _folder_kind(expanded), path=expanded)
    if expanded.endswith((".pth", ".pt")):
        return ModelSpec(text, "original", path=expanded, arch=_arch_from_filename(expanded))
    if expanded.endswith(".onnx"):
        if not os.path.isfile(expanded):
            raise ModelNotFound("model %s: file not found; write one with "
                                "'python3 -m depth_estimation.export SPEC --out %s'" % (base, base))
        return ModelSpec(text, "onnx", path=expanded)
    if base.count("/") == 1 and not base.startswith((".", "/", "~")):
        arch = next((a.name for a in ARCHS.values() if a.hub_id == base), None)
        return ModelSpec(text, "hub", arch=arch, hub_id=base)
    raise ModelNotFound("model %r: no such file or directory, and not a known spec; %s" % (text, SPEC_HELP))


def _shipped(text: str, base: str) -> ModelSpec:
    folder = SHIPPED[base]
    missing = [name for name in SHIPPED_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        restore = os.path.relpath(folder, os.path.dirname(ASSETS_DIR))
        raise ModelNotFound("model %s: its folder %s lacks %s (a partial checkout or image?); restore it "
                            "with 'git checkout -- %s'" % (base, folder, " and ".join(missing), restore))
    return ModelSpec(text, "student_dir", arch=STUDENTS[0], path=folder)


def _folder_kind(path: str) -> str:
    if os.path.isfile(os.path.join(path, "quantization.json")):
        return "quantized_dir"
    try:
        with open(os.path.join(path, "config.json")) as f:
            if json.load(f).get("model_type") in STUDENTS:
                return "student_dir"
    except (OSError, ValueError):
        pass
    return "hf_dir"


def _arch_from_filename(path: str) -> Optional[str]:
    name = os.path.basename(path)
    return next((a.name for a in ARCHS.values() if a.original_file == name), None)


SPEC_HELP = ("use one of: %s, %s, %s, random:<arch>, a Hugging Face id (owner/name), a local Hugging Face, "
             "student or quantized folder, an original depth_anything_v2_vit{s,b,l}.pth or an exported "
             ".onnx; "
             "Depth-Anything-V2 specs take @hqqN or @hqqN-dq (N = 8, 4, 3, 2, 1), or @int8 "
             "(ONNX Runtime int8, backend onnxruntime only)"
             % (", ".join(sorted(ARCHS)), ", ".join(STUDENTS), ", ".join(SHIPPED)))


def safe_name(text: str) -> str:
    """A spec as a file name."""
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("_")


def announce_untrained(text: str) -> None:
    """Say loudly (log WARNING) that a model has random weights."""
    line = "UNTRAINED MODEL: %s has RANDOM weights; its depth is meaningless" % text
    logging.getLogger("depth_estimation").warning("\n%s\n%s\n%s", "!" * len(line), line, "!" * len(line))
