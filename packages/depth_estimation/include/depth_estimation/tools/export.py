"""Export a model spec to ONNX at a fixed input size (for TensorRT on a Jetson, or ONNX Runtime).

    python3 -m depth_estimation.export da2-small --input-size 308 --frame-size 640x480 \\
        --out assets/robot/default.onnx
    python3 -m depth_estimation.export da2-small --input-size 308 --target onnxruntime --out da2s-308.onnx

``--target tensorrt`` (the default: what the robot's image needs in ``assets/robot/default.onnx``)
writes opset 11 with only operators TensorRT 7.1 parses; it runs in ONNX Runtime too, slower.
``--target onnxruntime`` writes opset 17 with ONNX Runtime's transformer fusions
(MultiHeadAttention, SkipLayerNormalization, BiasGelu: ONNX Runtime's own operators, CPU or CUDA;
TensorRT cannot read them), the file the estimator makes by itself for ``backend onnxruntime``.

The network input size is the one the node uses for frames of ``--frame-size`` (WxH) with
short side ``--input-size`` (:func:`depth_estimation.runtime.preprocess.input_shape`; 0, the
default, = the model's own). The export is checked (``onnx.checker`` and ONNX Runtime against
torch on a random input) and summarized in one line; ``OUT.json`` next to it records the result
and the spec. An existing OUT is only replaced with ``--force``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

from depth_estimation import options
from depth_estimation.io.atomic import output_problem, write_bytes, write_error
from depth_estimation.models.loading import load_net
from depth_estimation.models.specs import ModelNotFound, parse_spec
from depth_estimation.runtime import preprocess
from depth_estimation.runtime.onnx_export import DEFAULT_TARGET, TARGET_OPSETS, TARGETS, export_onnx
from depth_estimation.runtime.runners import ExportError


def parse_frame_size(text: str) -> Tuple[int, int]:
    """``"640x480"`` (width x height) -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError("frame size %r: expected WIDTHxHEIGHT, e.g. 640x480" % text) from None
    if width <= 0 or height <= 0:
        raise ValueError("frame size %r: expected positive sides" % text)
    return height, width


def load_network(spec_text: str):
    """The torch network of a spec (:func:`depth_estimation.models.loading.load_net`)."""
    spec = parse_spec(spec_text)
    if spec.kind == "onnx":
        raise ValueError("model %s is already an ONNX file" % spec_text)
    return load_net(spec)


def export_spec(spec_text: str, out: str, input_size: Optional[int] = 0, frame_size: str = "640x480",
                opset: Optional[int] = None, force: bool = False, check: bool = True,
                target: str = DEFAULT_TARGET) -> Dict[str, Any]:
    """Export ``spec_text`` to ``out`` (+ ``out.json``) for ``target``; the export dict plus spec and
    sizes. ``input_size`` 0 or None = the model's own short side; ``opset`` None = the target's."""
    if os.path.exists(out) and not force:
        raise FileExistsError("%s exists; pass --force to replace it" % out)
    frame_hw = parse_frame_size(frame_size)
    size = options.input_size_value(input_size)
    net = load_network(spec_text)
    short = size if size is not None else getattr(net, "default_input_size", 518)
    multiple = getattr(net, "multiple", preprocess.PATCH)
    height, width = preprocess.input_shape(frame_hw[0], frame_hw[1], short, multiple)
    result = export_onnx(net, height, width, out, opset=opset, check=check, target=target)
    result.update(spec=spec_text, input_size=short, frame_size=[frame_hw[1], frame_hw[0]])
    write_bytes(out + ".json", (json.dumps(result, indent=2) + "\n").encode())
    return result


def summary(result: Dict[str, Any]) -> str:
    h, w = result["input_hw"]
    check = ("onnxruntime vs torch max|diff| %.2g (%.2g of the output scale)"
             % (result["max_abs_diff"], result["rel_diff"]) if result["max_abs_diff"] is not None
             else "not checked")
    trt = "; ".join(result["tensorrt_issues"]) or "ok"
    fused = ", ".join("%d %s" % (n, op) for op, n in sorted(result.get("fused_ops", {}).items()))
    target = result.get("target", DEFAULT_TARGET)
    return ("exported %s for %s at %dx%d (HxW, opset %d) to %s: %.1f MB in %.1f s; %s; fused: %s; "
            "TensorRT 7.1: %s" % (result["spec"], target, h, w, result["opset"], result["path"],
                                  result["bytes"] / 1e6, result["seconds"], check, fused or "none", trt))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser, flag="spec", help="the model spec to export (any but an .onnx file), e.g. "
                      "da2-small, random:da2-small, da2-small@hqq8-dq, a model folder or an original .pth")
    options.add_input_size(parser)
    parser.add_argument("--frame-size", default="640x480", help="camera frame WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                        help="tensorrt (default): opset %d, only operators TensorRT 7.1 parses: the robot's "
                        "assets/robot/default.onnx (runs in ONNX Runtime too); onnxruntime: opset %d with "
                        "ONNX Runtime's fused MultiHeadAttention, SkipLayerNormalization and BiasGelu (CPU "
                        "or CUDA), what backend onnxruntime exports by itself; TensorRT cannot read it"
                        % (TARGET_OPSETS["tensorrt"], TARGET_OPSETS["onnxruntime"]))
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: the target's, %s; TensorRT 7.1 reads <= 11, 8.x <= 13)"
                        % ", ".join("%d for %s" % (v, k) for k, v in TARGET_OPSETS.items()))
    parser.add_argument("--out", required=True, help="the ONNX file to write")
    options.add_force(parser, "OUT")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    args = parser.parse_args(argv)
    problem = output_problem(args.out)
    if problem:  # before the model loads and the export runs
        print("error: %s" % problem, file=sys.stderr)
        return 2
    try:
        result = export_spec(args.spec, args.out, args.input_size, args.frame_size, args.opset, args.force,
                             check=not args.no_check, target=args.target)
    except (FileExistsError, ModelNotFound, ValueError, ExportError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk while writing: the file named, no traceback
        print("error: %s" % write_error(exc.filename or args.out, exc), file=sys.stderr)
        return 1
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
