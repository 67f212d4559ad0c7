"""``python3 -m depth_estimation.quantize``: quantize a Depth-Anything-V2 once, with HQQ into a folder,
or an exported ONNX file with ONNX Runtime's int8 into another ONNX file.

    python3 -m depth_estimation.quantize SPEC --bits 4 [--group-size 64] [--out DIR] [--force]
    python3 -m depth_estimation.quantize MODEL.onnx --int8 [--out MODEL-int8.onnx] [--force]

The quantizations themselves are :mod:`depth_estimation.models.hqq` and
:mod:`depth_estimation.runtime.ort_quant` (what the ``@int8`` spec suffix runs; the int8 file runs
with ``--backend onnxruntime`` only).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

from depth_estimation import options
from depth_estimation.io.atomic import output_problem, write_error
from depth_estimation.io.paths import file_bytes
from depth_estimation.models import hqq
from depth_estimation.models.loading import load_da2
from depth_estimation.models.specs import ModelNotFound, ModelSpec, parse_spec
from depth_estimation.runtime import ort_quant
from depth_estimation.runtime.runners import ExportError

SPEC_HELP = ("base model spec: a Depth-Anything-V2 without @hqq suffix: da2-small|da2-base|da2-large, "
             "random:da2-<size>, a Hugging Face id or folder, or an original .pth")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser, flag="spec", help=SPEC_HELP)
    parser.add_argument("--bits", type=int, choices=hqq.BITS, help="HQQ bits per backbone weight")
    parser.add_argument("--int8", action="store_true",
                        help="ONNX Runtime dynamic int8 of an exported .onnx SPEC instead (the @int8 "
                        "suffix's quantization; default --out: SPEC with -int8 before .onnx)")
    parser.add_argument("--group-size", type=int, default=64,
                        help="weights per scale and zero; must divide the inputs of every backbone linear "
                        "(default 64)")
    default_out = os.path.join(os.path.dirname(hqq.default_dir("spec", 4)),
                               "<spec>@hqq<bits>-g<group>-<hash of the weights and versions>")
    parser.add_argument("--out", help="output folder (default: %s)" % default_out)
    options.add_force(parser, "the output folder")
    return parser


def base_spec(text: str) -> ModelSpec:
    """The parsed spec of a Depth-Anything-V2 that can be quantized; ValueError / ModelNotFound
    (one line) for anything else: a quantized spec or folder, the student, an ONNX file."""
    spec = parse_spec(text)
    if spec.quant is not None or spec.kind == "quantized_dir":
        raise ValueError("%s is already quantized; give the base model spec" % text)
    if spec.family != "da2":
        raise ValueError("model spec %r: HQQ quantizes Depth-Anything-V2 backbones, not a %s model"
                         % (text, spec.family))
    return spec


def quantize_onnx_file(src: str, out: Optional[str], force: bool) -> int:
    """``--int8``: ONNX Runtime's int8 of the exported file ``src`` into ``out``."""
    out = out or os.path.splitext(src)[0] + "-int8.onnx"
    try:
        if not (src.endswith(".onnx") and os.path.isfile(src)):
            raise ValueError("--int8 quantizes an exported .onnx file; %s is none (export one with "
                             "'python3 -m depth_estimation.export SPEC --out FILE.onnx')" % src)
        if os.path.exists(out) and not force:
            raise FileExistsError("%s exists; use --force to replace it" % out)
        result = ort_quant.quantize_onnx(src, out)
    except (ValueError, FileExistsError, ExportError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    print("%s -> int8 (%s, %d nodes) in %.1f s: %.2f MB -> %.2f MB on disk, output moved %.3g "
          "(relative L2)\n%s" % (src, result["weight_type"], result["quantized_nodes"], result["seconds"],
                                 result["src_bytes"] / 1e6, result["bytes"] / 1e6, result["rel_diff"], out))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.int8 == (args.bits is not None):
        parser.error("give one of --bits N (HQQ) or --int8 (ONNX Runtime, an .onnx SPEC)")
    if args.int8:
        out = args.out or os.path.splitext(args.spec)[0] + "-int8.onnx"
    else:
        out = args.out or hqq.default_dir(args.spec, args.bits, args.group_size)
    problem = output_problem(out, folder=not args.int8)
    if problem:  # before the model loads
        print("error: %s" % problem, file=sys.stderr)
        return 2
    try:
        return quantize_onnx_file(args.spec, out, args.force) if args.int8 else quantize_hqq(args, out)
    except OSError as exc:  # a full disk while writing: the file named, no traceback
        print("error: %s" % write_error(exc.filename or out, exc), file=sys.stderr)
        return 1


def quantize_hqq(args: argparse.Namespace, out: str) -> int:
    """``--bits N``: HQQ of a Depth-Anything-V2 spec into the folder ``out``."""
    try:
        spec = base_spec(args.spec)
        if os.path.exists(out) and not args.force:
            raise FileExistsError("%s exists; use --force to replace it" % out)
        model = load_da2(spec)
    except (ModelNotFound, ValueError, FileExistsError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    before, start = hqq.weight_bytes(model), time.time()
    try:
        hqq.quantize_model(model, args.bits, args.group_size)
    except ValueError as exc:  # a group size that does not divide a layer
        print("error: %s" % exc, file=sys.stderr)
        return 1
    after = hqq.weight_bytes(model)
    hqq.save_quantized(model, out, {"base": args.spec}, overwrite=args.force)
    print("%s -> hqq%d g%d in %.1f s: weights %.2f MB -> %.2f MB in memory (%.3fx), %.2f MB on disk\n%s"
          % (args.spec, args.bits, args.group_size, time.time() - start, before / 1e6, after / 1e6,
             after / before, file_bytes(out) / 1e6, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
