"""Depth-Anything-V2 through transformers: configurations and loading from every source.

The architecture is transformers' ``DepthAnythingForDepthEstimation`` (DINOv2 ViT backbone,
DPT head). Weights come from a Hugging Face directory or hub id (safetensors only), from the
authors' original ``.pth`` state dicts (keys converted on load, see :mod:`.convert`), or are
random (``random:<arch>``).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from depth_estimation.models.specs import ARCHS, Da2Arch, ModelNotFound

# The DINOv2 backbone's attention runs through torch's scaled_dot_product_attention (fused kernels on
# CPU and CUDA; the ONNX export rewrites it per target). transformers 4.46 and 5.x pick it for Dinov2
# by default; the DPT head has no attention (the top-level config says "eager"), and
# ``from_pretrained(attn_implementation="sdpa")`` is refused for DepthAnything, so it is checked on
# the backbone: :func:`use_sdpa`.
ATTENTION = "sdpa"


def make_config(hidden_size: int, num_layers: int, num_heads: int, out_indices: Sequence[int],
                neck_hidden_sizes: Sequence[int], fusion_hidden_size: int, image_size: int = 518):
    """A transformers ``DepthAnythingConfig`` for a relative-depth Depth-Anything-V2."""
    from transformers import DepthAnythingConfig, Dinov2Config  # heavy: only when a model is built
    backbone = Dinov2Config(
        hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        mlp_ratio=4, image_size=image_size, patch_size=14, layerscale_value=1.0,
        out_indices=list(out_indices),
        apply_layernorm=True, reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=hidden_size, patch_size=14,
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=list(neck_hidden_sizes),
        fusion_hidden_size=fusion_hidden_size, head_in_index=-1, head_hidden_size=32,
        depth_estimation_type="relative",
    )


def arch_config(arch: Da2Arch):
    return make_config(arch.hidden_size, arch.num_layers, arch.num_heads, arch.out_indices,
                       arch.neck_hidden_sizes, arch.fusion_hidden_size)


def attention_implementation(model) -> str:
    """The attention implementation of a Depth-Anything-V2's backbone (``"sdpa"``, ``"eager"``...)."""
    config = getattr(getattr(model, "backbone", None), "config", None)
    return getattr(config, "_attn_implementation", None) or "eager"


def use_sdpa(model):
    """``model`` with its backbone's attention on :data:`ATTENTION`, where transformers picks the
    attention per call from the config (its ``ALL_ATTENTION_FUNCTIONS`` dispatch, 5.x); 4.46 builds
    the attention modules once, with sdpa by default, and is left as it is."""
    backbone = getattr(model, "backbone", None)
    module = sys.modules.get(type(backbone).__module__)
    if (backbone is not None and getattr(backbone, "_supports_sdpa", False)
            and hasattr(module, "ALL_ATTENTION_FUNCTIONS") and hasattr(F, "scaled_dot_product_attention")
            and attention_implementation(model) != ATTENTION):
        backbone.config._attn_implementation = ATTENTION
    return model


def random_model(arch_name: str, seed: Optional[int] = 0):
    """The architecture ``arch_name`` with random weights (deterministic for a given seed)."""
    from transformers import DepthAnythingForDepthEstimation  # heavy: only when a model is built
    if seed is not None:
        torch.manual_seed(seed)
    return use_sdpa(DepthAnythingForDepthEstimation(arch_config(ARCHS[arch_name])))


def from_hf_dir(path: str):
    """Load a Hugging Face format directory (config.json + safetensors)."""
    from transformers import DepthAnythingForDepthEstimation  # heavy: only when a model is built
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelNotFound("model %s: no config.json in that directory (expected a Hugging Face "
                            "model folder, e.g. from save_pretrained)" % path)
    if not any(f.endswith(".safetensors") for f in os.listdir(path)):
        raise ModelNotFound("model %s: no .safetensors weights in that directory (only safetensors "
                            "are loaded; convert pickled weights with save_pretrained)" % path)
    with unreadable(path):
        return use_sdpa(DepthAnythingForDepthEstimation.from_pretrained(path, use_safetensors=True))


@contextmanager
def unreadable(path: str) -> Iterator[None]:
    """Turn any failure to read model files into a one-line ModelNotFound naming ``path``."""
    try:
        yield
    except ModelNotFound:
        raise
    except Exception as exc:  # safetensors, pickle, shape and JSON errors all end here
        detail = " ".join(str(exc).split())[:300]
        raise ModelNotFound("model %s: cannot read it (%s: %s)" % (path, type(exc).__name__, detail)) from exc
