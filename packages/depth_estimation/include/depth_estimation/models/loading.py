"""One entry point from a model spec to a torch network: ``load_net(spec)``.

Every network it returns has the same face: ``forward(x: [B,3,H,W]) -> [B,H,W]`` relative
inverse depth, ``multiple`` (input sides must be multiples of it) and ``default_input_size``
(short side). ONNX files are not torch networks: the estimator hands them to a backend.
"""
from __future__ import annotations

import logging
import os

import torch

from depth_estimation.models import da2, fastdepth, hqq, hub
from depth_estimation.models.da2_original import load_original
from depth_estimation.models.specs import ARCHS, ModelNotFound, ModelSpec, announce_untrained, parse_spec

log = logging.getLogger(__name__)


class DA2Net(torch.nn.Module):
    """Depth-Anything-V2 (transformers) behind the common ``forward(x) -> [B,H,W]``."""

    multiple = 14
    default_input_size = 518

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model

    def forward(self, x):
        return self.hf(pixel_values=x).predicted_depth


def load_net(spec: ModelSpec, dequantize: bool = False):
    """The torch network a spec names, in eval mode, on the CPU. ``dequantize``: HQQ layers (a
    ``@hqqN`` spec, a quantized folder) as plain linears holding the same quantized values, which
    an ONNX export can hold (ONNX has no HQQ kernels)."""
    if spec.family == "onnx":
        raise ValueError("model %s is an ONNX file: use backend onnxruntime or tensorrt" % spec.text)
    if spec.quant is not None and spec.quant.method != "hqq":  # @int8: made from the export, not in torch
        raise ValueError("model %s: %s quantizes the ONNX export for backend onnxruntime; in torch (or to "
                         "export) use %s" % (spec.text, spec.quant.suffix, spec.base))
    if spec.family == "fastdepth":
        return _load_student(spec).eval()
    if spec.kind == "quantized_dir":
        return DA2Net(hqq.load_quantized(spec.path, dequantize=dequantize)).eval()
    if spec.quant is not None:
        return DA2Net(_load_quantized(spec, dequantize)).eval()
    return DA2Net(load_da2(spec)).eval()


def load_da2(spec: ModelSpec):
    """The transformers Depth-Anything-V2 a (not quantized) spec names, in eval mode, on the CPU."""
    if spec.kind == "random":
        announce_untrained(spec.text)
        model = da2.random_model(spec.arch)
    elif spec.kind == "hf_dir":
        model = da2.from_hf_dir(spec.path)
    elif spec.kind in ("arch", "hub"):
        model = da2.from_hf_dir(hub.resolve(spec.hub_id, spec.text))
    elif spec.kind == "original":
        if not os.path.isfile(spec.path):
            arch = spec.arch or "da2-small"
            raise ModelNotFound(
                "model %s: file not found; the authors' checkpoints (%s) are at "
                "https://huggingface.co/depth-anything, or use model:=%s for the converted ones"
                % (spec.path, ", ".join(a.original_file for a in ARCHS.values()), arch))
        with da2.unreadable(spec.path):
            model = load_original(spec.path)
    else:
        raise ValueError("model %s (%s) is not a Depth-Anything-V2 spec" % (spec.text, spec.kind))
    return model.eval()


def _load_student(spec: ModelSpec):
    if spec.kind == "random":
        announce_untrained(spec.text)
        return fastdepth.random_student()
    if spec.kind == "student_dir":
        return fastdepth.load_student(spec.path)
    raise ModelNotFound("model %s is the student's architecture, not weights: use "
                        "model:=fastdepth-duckietown (shipped, trained in the Duckietown simulator), train "
                        "one with 'depth-distill' and run model:=<its folder>, or use model:=random:%s"
                        % (spec.text, spec.arch))


def _load_quantized(spec: ModelSpec, dequantize: bool = False):
    """``<base>@hqqN[-dq]``: the quantized copy from the cache, made once on first use (the cache
    folder is keyed by the base weights' content, see :func:`.hqq.default_dir`)."""
    q = spec.quant
    folder = hqq.default_dir(spec.base, q.bits, q.group_size)
    if not os.path.isfile(os.path.join(folder, "quantization.json")):
        log.warning("quantizing %s to %d bits once; saved to %s so later starts only load it",
                    spec.base, q.bits, folder)
        model = hqq.quantize_model(load_da2(parse_spec(spec.base)), q.bits, q.group_size)
        hqq.save_quantized(model, folder, {"base": spec.base}, overwrite=True)
    return hqq.load_quantized(folder, dequantize=q.dequantize or dequantize)
