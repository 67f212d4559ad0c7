"""HQQ weight quantization of Depth-Anything-V2's backbone, saved once and loaded without re-quantizing.

Every ``nn.Linear`` of the DINOv2 backbone (attention q/k/v/out, MLP fc1/fc2: 21.2M of the Small
model's 24.8M parameters) becomes hqq's ``HQQLinear`` at 8, 4, 3, 2 or 1 bits (groups of
``group_size`` along the input axis, CPU, fp32 compute); the DPT neck and head stay fp32.

Two ways to run a quantized model:

* *packed*: the ``HQQLinear`` modules keep the packed weights and dequantize them on every
  forward (least memory);
* *dequantized* (:func:`dequantize_model`): plain ``nn.Linear`` modules holding exactly the
  quantized values (fp32 speed and memory; the file on disk stays small).

On a CPU, HQQ saves memory and disk, not time: hqq 0.2.8's CPU backends dequantize every weight
in every forward. Measured here (random:da2-small at 266x350, 2 threads, interleaved with fp32):
packed ``@hqq8``/``@hqq4``/``@hqq2`` run at 0.85-0.91x fp32 with the default ``PYTORCH`` backend
and 0.91-0.92x with ``PYTORCH_COMPILE`` (torch.compile, works offline), holding 38/27/22 MB of
weights instead of 99 MB; ``-dq`` runs at fp32 speed with fp32 memory (only the folder on disk is
small). hqq's faster backends (torchao int4, gemlite, bitblas, marlin, ATEN) are CUDA-only (the
torchao one fails on the CPU: no ``_convert_weight_to_int4pack`` kernel). For speed on a CPU use
ONNX Runtime's ``@int8`` (:mod:`depth_estimation.runtime.ort_quant`).

``python3 -m depth_estimation.quantize SPEC --bits 4 [--group-size 64] [--out DIR] [--force]``
quantizes offline and writes a folder with ``model.safetensors`` (packed weights, scale/zero and
all other tensors; no pickle) and ``quantization.json`` (bits, base spec, transformers config and
the per-layer metadata HQQ needs). :func:`load_quantized` rebuilds the model from that folder
without calling the quantizer. ``hqq`` is only imported when a quantized model is built.
Tensor names in the file use the Hugging Face checkpoint names (``attention.attention.query``
...), so a folder written with transformers 5 loads under 4.x and the other way round.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from depth_estimation.io.paths import cache_dir
from depth_estimation.models import cache_keys

BITS = (8, 4, 3, 2, 1)
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "quantization.json"
_TENSOR_META = ("scale", "zero")  # HQQLinear.meta tensors stored (no quantized scale/zero here)
# transformers 5 names of the DINOv2 attention linears -> checkpoint (transformers 4) names
_CANON = ((".attention.q_proj", ".attention.attention.query"),
          (".attention.k_proj", ".attention.attention.key"),
          (".attention.v_proj", ".attention.attention.value"),
          (".attention.o_proj", ".attention.output.dense"))


def _hqq():
    try:
        from hqq.core import quantize as hq
    except ImportError as exc:  # pragma: no cover - depends on the image
        raise ImportError("HQQ-quantized models need the 'hqq' package (pip install hqq==0.2.8.post1)"
                          ) from exc
    return hq


def _canon(name: str) -> str:
    for new, old in _CANON:
        name = re.sub(re.escape(new) + r"(?=\.|$)", old, name)
    return name


def _hqq_layers(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if type(module).__name__ == "HQQLinear":
            yield name, module


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize_model(model, bits: int, group_size: int = 64, compute_dtype: torch.dtype = torch.float32):
    """Replace every ``nn.Linear`` of ``model.backbone`` by an HQQLinear (packed); returns ``model``."""
    if bits not in BITS:
        raise ValueError("HQQ bits must be one of %s, not %r" % (", ".join(map(str, BITS)), bits))
    hq = _hqq()
    linears = [(n, m) for n, m in model.backbone.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        if linear.in_features % group_size:
            raise ValueError("group size %d does not divide the %d inputs of backbone.%s"
                             % (group_size, linear.in_features, name))
    config = hq.BaseQuantizeConfig(nbits=bits, group_size=group_size, axis=1)
    for name, linear in linears:
        _set_module(model.backbone, name, hq.HQQLinear(linear, config, compute_dtype=compute_dtype,
                                                       device="cpu", del_orig=True))
    return model


def dequantize_model(model):
    """Replace every HQQLinear by an ``nn.Linear`` holding its dequantized weights; returns ``model``."""
    for name, layer in list(_hqq_layers(model)):
        with torch.no_grad():
            weight = layer.dequantize()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        linear.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=False)
        if layer.bias is not None:
            linear.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        _set_module(model, name, linear)
    return model


def _tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()
    for _, layer in _hqq_layers(model):
        stack = [layer.meta or {}, {"W_q": layer.W_q, "bias": layer.bias}]
        while stack:
            for value in stack.pop().values():
                if isinstance(value, dict):
                    stack.append(value)
                elif isinstance(value, torch.Tensor):
                    yield value


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters, buffers and HQQ packed weights + meta tensors, each storage once."""
    seen: Dict[int, int] = {}
    for t in _tensors(model):
        storage = t.untyped_storage()
        if storage.nbytes():
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(seen.values())


def default_dir(base_spec_text: str, bits: int, group_size: int = 64) -> str:
    """The cache folder of ``base_spec_text`` quantized to ``bits`` in groups of ``group_size``:
    ``<spec sanitised>@hqq<bits>-g<group>-<hash>``, the hash of the base weights' content (a
    folder's path, sizes and times; a hub snapshot; random's arch and seed), the settings and the
    torch, transformers and hqq versions (:mod:`.cache_keys`), so that another folder of the same
    name, rewritten weights or a new quantizer get their own copy."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base_spec_text.strip()).strip("_.") or "model"
    key = cache_keys.short_hash(cache_keys.text_fingerprint(base_spec_text), bits, group_size, FORMAT_VERSION,
                                cache_keys.versions("torch", "transformers", "hqq"))
    return cache_dir("quantized", "%s@hqq%d-g%d-%s" % (base, bits, group_size, key))


def _dtype_name(value) -> str:  # torch.float32 -> "float32", as transformers writes config.json
    return str(value).replace("torch.", "")


def _layer_record(layer) -> dict:
    meta, params = layer.meta, layer.quant_config["weight_quant_params"]
    if meta.get("quant_scale") or meta.get("quant_zero") or layer.offload_meta:
        raise ValueError("quantized scale/zero and offloaded meta are not supported")
    record = {k: meta[k] for k in ("nbits", "group_size", "axis", "packing", "view_as_float", "quant_scale",
                                   "quant_zero")}
    record.update({k: params[k] for k in ("channel_wise", "optimize", "round_zero")})
    record.update(shape=list(meta["shape"]), bias=layer.bias is not None,
                  compute_dtype=_dtype_name(layer.compute_dtype),
                  unpack_view_dtype=_dtype_name(meta["unpack_view_dtype"]))
    return record


def save_quantized(model, directory: str, meta: Optional[dict] = None, overwrite: bool = False) -> str:
    """Write ``model.safetensors`` + ``quantization.json`` into ``directory`` (atomically)."""
    from depth_estimation.io.atomic import write_model_folder

    layers = dict(_hqq_layers(model))
    if not layers:
        raise ValueError("model has no HQQLinear layers; quantize_model() it first")
    records = {_canon(name): _layer_record(layer) for name, layer in layers.items()}
    first = next(iter(records.values()))
    if any(r["nbits"] != first["nbits"] or r["group_size"] != first["group_size"] for r in records.values()):
        raise ValueError("mixed bits/group sizes are not supported by this format")
    tensors = {}
    for key, value in model.state_dict().items():
        if not any(key.startswith(name + ".") for name in layers):
            tensors[_canon(key)] = value
    for name, layer in layers.items():
        parts = dict({k: layer.meta[k] for k in _TENSOR_META}, W_q=layer.W_q, bias=layer.bias)
        tensors.update({"%s.%s" % (_canon(name), k): v for k, v in parts.items() if v is not None})
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}  # no shared storage
    info = dict(meta or {})
    info.update(method="hqq", bits=first["nbits"], group_size=first["group_size"], axis=first["axis"],
                base=(meta or {}).get("base"), config=model.config.to_dict(), format_version=FORMAT_VERSION,
                layers=records)
    return write_model_folder(directory, tensors, WEIGHTS_FILE, META_FILE, info, overwrite=overwrite,
                              metadata={"format": "pt", "method": "hqq"}, json_default=_dtype_name)


def read_info(directory: str) -> dict:
    with open(os.path.join(directory, META_FILE)) as f:
        info = json.load(f)
    if info.get("method") != "hqq" or info.get("format_version") != FORMAT_VERSION:
        raise ValueError("%s: not an HQQ folder of format version %d (method=%r, format_version=%r)"
                         % (directory, FORMAT_VERSION, info.get("method"), info.get("format_version")))
    return info


def _rebuild_layer(hq, record: dict, tensors: Dict[str, torch.Tensor], prefix: str):
    """An HQQLinear from stored packed tensors and metadata: hqq's load_state_dict, no quantizer."""
    dtype = {name: getattr(torch, record[name]) for name in ("compute_dtype", "unpack_view_dtype")}
    layer = hq.HQQLinear(None, None, compute_dtype=dtype["compute_dtype"], device="cpu", initialize=False)
    state = {k: record[k] for k in ("nbits", "group_size", "axis", "packing", "view_as_float", "quant_scale",
                                    "quant_zero", "channel_wise", "optimize", "round_zero")}
    state.update(dtype, shape=torch.Size(record["shape"]), stores_quant_config=True, offload_meta=False,
                 W_q=tensors[prefix + "W_q"], **{k: tensors[prefix + k] for k in _TENSOR_META})
    if record["bias"]:
        state["bias"] = tensors[prefix + "bias"]
    layer.load_state_dict(state)
    return layer


def load_quantized(directory: str, dequantize: bool = False):
    """The model saved in ``directory`` (eval mode, CPU): packed HQQLinear layers, or plain
    ``nn.Linear`` with the dequantized weights when ``dequantize``. Never re-quantizes."""
    from safetensors.torch import load_file
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    directory = os.path.expanduser(directory)
    info = read_info(directory)
    hq = _hqq()
    tensors = load_file(os.path.join(directory, WEIGHTS_FILE))
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig.from_dict(info["config"]))
    local = {_canon(n): n for n, _ in model.named_modules()}
    local_keys = {_canon(k): k for k in model.state_dict()}
    layers = info["layers"]
    hqq_keys = {k for k in tensors if k.rpartition(".")[0] in layers}
    plain = {local_keys.get(k, k): v for k, v in tensors.items() if k not in hqq_keys}
    missing, unexpected = model.load_state_dict(plain, strict=False)
    replaced = {local.get(n, n) + "." + p for n in layers for p in ("weight", "bias")}
    if unexpected or set(missing) - replaced or set(layers) - set(local):
        raise ValueError("%s does not fit the model its config builds: missing %s, unexpected %s"
                         % (directory, sorted(set(missing) - replaced)[:5], sorted(unexpected)[:5]))
    for name, record in layers.items():
        _set_module(model, local[name], _rebuild_layer(hq, record, tensors, name + "."))
    if dequantize:
        dequantize_model(model)
    return model.eval()
