"""``python3 -m depth_estimation.quantize``: quantize a Depth-Anything-V2 once into a folder.

    python3 -m depth_estimation.quantize SPEC --bits 4 [--group-size 64] [--out DIR] [--force]

The quantization itself is :mod:`depth_estimation.models.hqq`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

from depth_estimation import options
from depth_estimation.io.paths import file_bytes
from depth_estimation.models import hqq
from depth_estimation.models.loading import load_da2
from depth_estimation.models.specs import ModelNotFound, ModelSpec, parse_spec

SPEC_HELP = ("base model spec: a Depth-Anything-V2 without @hqq suffix: da2-small|da2-base|da2-large, "
             "random:da2-<size>, a Hugging Face id or folder, or an original .pth")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser, flag="spec", help=SPEC_HELP)
    parser.add_argument("--bits", type=int, required=True, choices=hqq.BITS, help="bits per backbone weight")
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


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or hqq.default_dir(args.spec, args.bits, args.group_size)
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
