"""The authors' Depth-Anything-V2 checkpoints <-> transformers' ``DepthAnythingForDepthEstimation``.

The authors' ``depth_anything_v2_vit{s,b,l}.pth`` files are plain state dicts of their
``DepthAnythingV2`` module (github.com/DepthAnything/Depth-Anything-V2,
``depth_anything_v2/dpt.py``): a DINOv2 ViT under ``pretrained.*`` (``dinov2.py``,
``dinov2_layers/``) and a ``DPTHead`` under ``depth_head.*`` (``dpt.py``, ``util/blocks.py``).
The differences from transformers' layout, all in :func:`_key_table`:

* attention q/k/v are one fused ``attn.qkv`` Linear (rows q, k, v) in the original;
* ``resize_layers.2`` is an ``nn.Identity`` (no weights), as is transformers' resize of stage 2;
* ``scratch.refinenetN`` runs deepest first (``refinenet4`` first), transformers'
  ``fusion_stage.layers`` in run order, so ``refinenetN`` is ``fusion_stage.layers.{4-N}``;
* ``scratch.output_conv2`` is a Sequential (conv, ReLU, conv, ...): only ``.0`` and ``.2`` hold weights.

transformers renamed DINOv2's attention parameters in 5.x (``attention.{q,k,v,o}_proj``; 4.x:
``attention.attention.{query,key,value}`` and ``attention.output.dense``); the naming is taken
from the installed transformers, so both work.
"""
from __future__ import annotations

import functools
import math
import pickle
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from depth_estimation.models.da2 import make_config

# The authors' DepthAnythingV2.intermediate_layer_idx (0-based blocks), by number of blocks.
REFERENCE_LAYERS = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23)}

# (query, key, value, output) attention parameter prefixes inside a transformers Dinov2Layer.
ATTENTION_NAMINGS = (
    ("attention.attention.query", "attention.attention.key", "attention.attention.value",
     "attention.output.dense"),  # transformers 4.x
    ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),  # 5.x
)

WB = ("weight", "bias")


def out_indices_for(num_layers: int) -> List[int]:
    """transformers' 1-based ``out_indices`` (hidden state 0 is the embeddings) for a depth.

    12 and 24 blocks use the authors' layers (vits/vitb: 2,5,8,11; vitl: 4,11,17,23, 0-based).
    Other depths (tiny test models) take the last block of each quarter: n/4, n/2, 3n/4, n.
    """
    if num_layers in REFERENCE_LAYERS:
        return [i + 1 for i in REFERENCE_LAYERS[num_layers]]
    if num_layers < 4:
        raise ValueError("a Depth-Anything-V2 backbone needs at least 4 blocks, got %d" % num_layers)
    return [num_layers * q // 4 for q in (1, 2, 3, 4)]


def _attention_naming(hf_keys: Optional[Sequence[str]] = None) -> Tuple[str, str, str, str]:
    """The installed transformers' attention naming, from ``hf_keys`` (a model's state dict
    keys) or else from a tiny ``Dinov2Layer``."""
    keys = list(hf_keys) if hf_keys is not None else list(_tiny_layer_keys())
    for naming in ATTENTION_NAMINGS:
        if all(any(k.endswith(n + ".weight") for k in keys) for n in naming):
            return naming
    raise ValueError("unknown transformers DINOv2 attention naming (keys: %s); expected one of %s"
                     % (", ".join(k for k in keys if "attention" in k)[:500], ATTENTION_NAMINGS))


@functools.lru_cache(maxsize=None)
def _tiny_layer_keys() -> Tuple[str, ...]:
    from transformers import Dinov2Config  # heavy: only when a checkpoint is converted
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Layer  # (idem)

    return tuple(Dinov2Layer(Dinov2Config(hidden_size=8, num_attention_heads=1)).state_dict())


def _key_table(num_layers: int, attention: Sequence[str]) -> List[Tuple[str, Tuple[str, ...]]]:
    """The one mapping, in the authors' state dict order: ``(original key, hf keys)``.

    One hf key is a rename; three are the q, k, v slices (dim 0) of a fused ``qkv`` tensor.
    """
    table = []  # type: List[Tuple[str, Tuple[str, ...]]]

    def add(orig: str, hf: str, params: Sequence[str] = WB) -> None:
        for p in params:
            table.append((orig + "." + p, (hf + "." + p,)))

    for name, hf in (("cls_token", "cls_token"), ("pos_embed", "position_embeddings"),
                     ("mask_token", "mask_token")):
        table.append(("pretrained." + name, ("backbone.embeddings." + hf,)))
    add("pretrained.patch_embed.proj", "backbone.embeddings.patch_embeddings.projection")
    q, k, v, o = attention
    for i in range(num_layers):
        a, b = "pretrained.blocks.%d." % i, "backbone.encoder.layer.%d." % i
        add(a + "norm1", b + "norm1")
        for p in WB:
            table.append((a + "attn.qkv." + p, tuple(b + n + "." + p for n in (q, k, v))))
        add(a + "attn.proj", b + o)
        table.append((a + "ls1.gamma", (b + "layer_scale1.lambda1",)))
        add(a + "norm2", b + "norm2")
        add(a + "mlp.fc1", b + "mlp.fc1")
        add(a + "mlp.fc2", b + "mlp.fc2")
        table.append((a + "ls2.gamma", (b + "layer_scale2.lambda1",)))
    add("pretrained.norm", "backbone.layernorm")

    h, neck = "depth_head.", "neck."
    for i in range(4):
        add(h + "projects.%d" % i, neck + "reassemble_stage.layers.%d.projection" % i)
    for i in (0, 1, 3):  # resize_layers.2 is nn.Identity
        add(h + "resize_layers.%d" % i, neck + "reassemble_stage.layers.%d.resize" % i)
    for i in range(4):
        add(h + "scratch.layer%d_rn" % (i + 1), neck + "convs.%d" % i, ("weight",))
    for n in range(1, 5):  # refinenet4 runs first = fusion_stage.layers.0
        a, b = h + "scratch.refinenet%d." % n, neck + "fusion_stage.layers.%d." % (4 - n)
        add(a + "out_conv", b + "projection")
        for r in (1, 2):
            for c in (1, 2):
                add(a + "resConfUnit%d.conv%d" % (r, c), b + "residual_layer%d.convolution%d" % (r, c))
    add(h + "scratch.output_conv1", "head.conv1")
    add(h + "scratch.output_conv2.0", "head.conv2")
    add(h + "scratch.output_conv2.2", "head.conv3")
    return table


def _check_keys(what: str, present, expected) -> None:
    missing = [k for k in expected if k not in present]
    extra = sorted(set(present) - set(expected))
    if missing or extra:
        raise ValueError("%s does not match Depth-Anything-V2: %s%s" % (
            what,
            "missing key(s): %s" % ", ".join(missing[:20]) if missing else "",
            ("; " if missing and extra else "") +
            ("unmapped key(s): %s" % ", ".join(extra[:20]) if extra else "")))


def _shape(sd, key: str):
    if key not in sd:
        raise ValueError("original state dict does not match Depth-Anything-V2: missing key(s): %s"
                         % key)
    return tuple(sd[key].shape)


def original_to_hf(state_dict, num_heads: Optional[int] = None):
    """``(config, hf_state_dict)`` for an original state dict; the architecture comes from shapes.

    The head count is not in the weights: DINOv2 uses 64 channels per head (vits 6, vitb 12,
    vitl 16), so it is ``hidden // 64`` unless ``num_heads`` is given (tiny test models).
    """
    sd = dict(state_dict)
    hidden = _shape(sd, "pretrained.cls_token")[-1]
    blocks = {int(m.group(1)) for m in (re.match(r"pretrained\.blocks\.(\d+)\.", k) for k in sd) if m}
    num_layers = max(blocks) + 1 if blocks else 0
    neck = [_shape(sd, "depth_head.projects.%d.weight" % i)[0] for i in range(4)]
    fusion = _shape(sd, "depth_head.scratch.layer1_rn.weight")[0]
    patches = _shape(sd, "pretrained.pos_embed")[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError("pretrained.pos_embed holds %d patch positions, not a square grid" % patches)
    config = make_config(hidden, num_layers, num_heads or max(1, hidden // 64),
                         out_indices_for(num_layers), neck, fusion, image_size=side * 14)

    table = _key_table(num_layers, _attention_naming())
    _check_keys("original state dict", sd, [o for o, _ in table])
    hf = {}
    for orig, hf_keys in table:
        parts = torch.chunk(sd[orig], len(hf_keys), dim=0) if len(hf_keys) > 1 else (sd[orig],)
        if len(parts) != len(hf_keys):
            raise ValueError("%s of shape %s does not split into q, k, v"
                             % (orig, tuple(sd[orig].shape)))
        for key, part in zip(hf_keys, parts):
            hf[key] = part.clone() if len(hf_keys) > 1 else part
    return config, hf


def hf_to_original(model) -> Dict[str, "torch.Tensor"]:
    """The state dict of the authors' ``DepthAnythingV2`` module holding ``model``'s weights."""
    sd = model.state_dict()
    table = _key_table(model.config.backbone_config.num_hidden_layers, _attention_naming(sd))
    _check_keys("transformers state dict", sd, [h for _, hs in table for h in hs])
    return {orig: torch.cat([sd[h].detach() for h in hf_keys], 0).clone()
            for orig, hf_keys in table}


def load_original(path: str, num_heads: Optional[int] = None):
    """A ``DepthAnythingForDepthEstimation`` from the authors' ``.pth`` (tensors only: nothing
    else is unpickled), strictly checked."""
    from transformers import DepthAnythingForDepthEstimation  # heavy: only when a model is built

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError("%s: refused, not a plain tensor state dict (weights_only load): %s"
                         % (path, str(e).splitlines()[0] if str(e) else e)) from e
    if isinstance(sd, dict) and "pretrained.cls_token" not in sd:
        for wrapper in ("model", "state_dict"):
            if isinstance(sd.get(wrapper), dict):
                sd = sd[wrapper]
                break
    if not isinstance(sd, dict):
        raise ValueError("%s: expected a state dict, got %s" % (path, type(sd).__name__))
    config, hf = original_to_hf(sd, num_heads=num_heads)
    model = DepthAnythingForDepthEstimation(config)
    model.load_state_dict(hf, strict=True)
    return model.eval()
