"""``python3 -m depth_estimation.tools.build_engine --model F.onnx``: build (or find) the TensorRT
engine of an exported ONNX file once, as the node would on its first start, and exit.

The robot's one-shot build (``dts devel run -H ROBOT -L build-engine``, launchers/build-engine.sh):
on a 2 GB Jetson Nano the build needs the memory the robot's other containers hold, so it runs
alone, before the node; the node then loads the engine in seconds. The engine goes where the node
looks (``/data/config/depth_estimation/engines`` on a robot, :func:`.engine_cache.engine_dir`), keyed
the same way (fp16 and the 256 MB workspace by default, as config/depth_node/default.yaml). The
engine runs once on a blank input, with the runner's self-check. Exit code 0: ready; 1: one line why.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import numpy as np

from depth_estimation import options
from depth_estimation.runtime.engine_cache import DEFAULT_WORKSPACE_MB
from depth_estimation.runtime.runners import BackendUnavailable, ExportError
from depth_estimation.runtime.tensorrt_build import BuildMemoryError


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.tools.build_engine",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_model(parser, help="the exported .onnx file (python3 -m depth_estimation.export)")
    parser.add_argument("--engine-dir", default=None, help="engine folder (default: the node's, "
                        "/data/config/depth_estimation/engines on a robot)")
    parser.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB,
                        help="builder workspace in MB (default %d, the node's workspace_mb)"
                        % DEFAULT_WORKSPACE_MB)
    parser.add_argument("--fp32", action="store_true",
                        help="an fp32 engine (the node's tensorrt_fp16: false)")
    parser.add_argument("--no-memory-check", action="store_true",
                        help="build even when less memory is free than the build is expected to need")
    args = parser.parse_args(argv)
    from depth_estimation.runtime.tensorrt_runner import TensorRTRunner

    start = time.monotonic()
    try:
        runner = TensorRTRunner(args.model, fp16=not args.fp32, workspace_mb=args.workspace_mb,
                                engine_dir=args.engine_dir, check_memory=not args.no_memory_check)
        x = np.zeros((1, 3) + tuple(runner.input_hw), np.float32)
        runner.self_check(x, runner(x))
    except (BackendUnavailable, BuildMemoryError, ExportError, FileNotFoundError, ValueError) as exc:
        print("build_engine: %s" % exc, file=sys.stderr)
        return 1
    print("build_engine: %s ready (%s, %.0f s)" % (runner.engine_path, runner.key["precision"],
                                                   time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
