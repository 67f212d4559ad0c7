"""``python3 -m depth_estimation.weights fetch|where SPEC``: released weights into the local cache.

``fetch`` downloads a spec's weights once (configuration and safetensors only; the Dockerfile does
this at build time, so the robot needs no network); ``where`` prints their local directory. A model
shipped with the package (``fastdepth-duckietown``) needs no download: both print its folder.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from depth_estimation import options
from depth_estimation.models import hub
from depth_estimation.models.specs import SHIPPED, ModelNotFound, parse_spec


def _hub_id(spec_text: str) -> str:
    spec = parse_spec(spec_text)
    if spec.hub_id is None:
        raise ValueError("model spec %r does not name Hugging Face weights" % spec_text)
    return spec.hub_id


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["fetch", "where"],
                        help="fetch: download the weights once; where: print their local folder")
    options.add_model(parser, flag="spec",
                      help="a model spec with released weights, e.g. da2-small, or a Hugging Face id")
    args = parser.parse_args(argv)
    try:
        if args.spec.strip() in SHIPPED:
            print(parse_spec(args.spec).path)  # ModelNotFound when its folder is incomplete
            return 0
        hub_id = _hub_id(args.spec)
        print(hub.fetch(hub_id) if args.command == "fetch" else hub.resolve(hub_id, args.spec))
    except (ModelNotFound, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
