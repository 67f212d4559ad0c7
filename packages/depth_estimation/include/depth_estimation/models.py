"""Model specs: the one name a model variant has everywhere (node parameter, benchmark, tables).

A spec is one of

* ``da2-small`` / ``da2-base`` / ``da2-large``: Depth-Anything-V2 with its released weights
  (Hugging Face id in :data:`ARCHS`), taken from the local cache (see :mod:`.weights`);
* ``random:<arch>``: the same architecture with random weights (untrained; for tests,
  benchmarks and offline demos);
* a Hugging Face hub id (``owner/name``), a local directory in Hugging Face format, or an
  original ``depth_anything_v2_vit{s,b,l}.pth`` checkpoint of the authors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


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


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``text`` is the string users type and every table shows."""

    text: str
    kind: str  # "random" | "arch" | "hub" | "hf_dir" | "original"
    arch: Optional[str] = None  # key of ARCHS when known
    path: Optional[str] = None  # local file or directory
    hub_id: Optional[str] = None
    options: Tuple[str, ...] = field(default=())  # "@..." suffixes, for later variants

    @property
    def untrained(self) -> bool:
        return self.kind == "random"


def parse_spec(text: str) -> ModelSpec:
    """Parse a model spec string; raise ValueError with the accepted forms when it is none."""
    text = text.strip()
    if not text:
        raise ValueError("empty model spec; " + SPEC_HELP)
    base, *options = text.split("@")
    if options:
        raise ValueError("model spec %r: variant suffixes (%s) are not supported yet; %s"
                         % (text, ", ".join("@" + o for o in options), SPEC_HELP))
    if base.startswith(RANDOM_PREFIX):
        arch = base[len(RANDOM_PREFIX):]
        if arch not in ARCHS:
            raise ValueError("model spec %r: unknown architecture %r; known: %s"
                             % (text, arch, ", ".join(sorted(ARCHS))))
        return ModelSpec(text, "random", arch=arch)
    if base in ARCHS:
        return ModelSpec(text, "arch", arch=base, hub_id=ARCHS[base].hub_id)
    expanded = os.path.expanduser(base)
    if os.path.isdir(expanded):
        return ModelSpec(text, "hf_dir", path=expanded)
    if expanded.endswith((".pth", ".pt")):
        return ModelSpec(text, "original", path=expanded, arch=_arch_from_filename(expanded))
    if base.count("/") == 1 and not base.startswith((".", "/", "~")):
        arch = next((a.name for a in ARCHS.values() if a.hub_id == base), None)
        return ModelSpec(text, "hub", arch=arch, hub_id=base)
    raise ModelNotFound("model %r: no such file or directory, and not a known spec; %s" % (text, SPEC_HELP))


def _arch_from_filename(path: str) -> Optional[str]:
    name = os.path.basename(path)
    return next((a.name for a in ARCHS.values() if a.original_file == name), None)


SPEC_HELP = ("use one of: %s, random:<arch>, a Hugging Face id (owner/name), "
             "a local Hugging Face directory, or an original depth_anything_v2_vit{s,b,l}.pth"
             % ", ".join(sorted(ARCHS)))


def known_specs() -> List[str]:
    return sorted(ARCHS) + [RANDOM_PREFIX + a for a in sorted(ARCHS)]
