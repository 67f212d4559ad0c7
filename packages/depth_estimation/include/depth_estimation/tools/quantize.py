"""``python3 -m depth_estimation.quantize``: quantize a Depth-Anything-V2 once into a folder.

    python3 -m depth_estimation.quantize SPEC --bits 4 [--group-size 64] [--out DIR] [--force]

The quantization itself is :mod:`depth_estimation.models.hqq`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from depth_estimation.models import hqq
from depth_estimation.models.loading import load_da2
from depth_estimation.models.specs import ModelNotFound, parse_spec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="base model spec, e.g. da2-small, random:da2-small or a local HF folder")
    parser.add_argument("--bits", type=int, required=True, choices=hqq.BITS)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--out", help="output folder (default: %s)" % hqq.default_dir("<spec>", 4, 64).replace("4-g64", "<bits>-g<group>"))
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    out = args.out or hqq.default_dir(args.spec, args.bits, args.group_size)
    if os.path.exists(out) and not args.force:
        print("error: %s exists; use --force to replace it" % out, file=sys.stderr)
        return 1
    try:
        spec = parse_spec(args.spec)
        if getattr(spec, "quant", None) or getattr(spec, "kind", "") == "quantized_dir":
            raise ValueError("%s is already quantized; give the base model spec" % args.spec)
        model = load_da2(spec)
    except (ModelNotFound, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    before, start = hqq.weight_bytes(model), time.time()
    hqq.quantize_model(model, args.bits, args.group_size)
    after = hqq.weight_bytes(model)
    hqq.save_quantized(model, out, {"base": args.spec}, overwrite=args.force)
    print("%s -> hqq%d g%d in %.1f s: weights %.2f MB -> %.2f MB in memory (%.3fx), %.2f MB on disk\n%s"
          % (args.spec, args.bits, args.group_size, time.time() - start, before / 1e6, after / 1e6,
             after / before, hqq.file_bytes(out) / 1e6, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
