"""The arm64v8 image's build-time check of its Python stack, so that the build fails, not the robot:
``python3 -m depth_estimation.runtime.jetson_check`` (the Dockerfile runs it; no GPU needed).

TensorRT 7.1 and PyCUDA 2021.1 (Duckietown's dt-machine-learning-base-environment, daffy) use
``np.bool``, which numpy 1.24 removed: ``import pycuda.autoinit`` runs PyCUDA's dtype registry
(``pycuda.tools`` -> ``compyte.dtypes._fill_dtype_registry``), which then fails with
``AttributeError``, and TensorRT's ``nptype`` too (the runner maps types itself, see
:data:`.tensorrt_runner.NUMPY_TYPES`). This check asserts numpy's version is in
:data:`NUMPY_RANGE` (dependencies-py3.arm64v8.txt pins the same) and runs that registry, which is
pure Python.
"""
from __future__ import annotations

import re
import sys
from typing import Optional, Tuple

# numpy for the robot: opencv-python-headless 4.10 needs >= 1.19.3; np.bool is gone from 1.24
NUMPY_RANGE = ((1, 19, 3), (1, 24))


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def numpy_problem(version: str) -> Optional[str]:
    """Why numpy ``version`` cannot run TensorRT 7.1 / PyCUDA 2021.1 here, or None."""
    low, below = NUMPY_RANGE
    if low <= _version(version) < below:
        return None
    return ("numpy %s: TensorRT 7.1 and PyCUDA 2021.1 need numpy>=%s,<%s (dependencies-py3.arm64v8.txt)"
            % (version, ".".join(map(str, low)), ".".join(map(str, below))))


def pycuda_registry_problem() -> Optional[str]:
    """Run PyCUDA's dtype registry as ``import pycuda.autoinit`` does; why it fails, or None."""
    try:
        from pycuda.compyte.dtypes import _fill_dtype_registry  # optional: the arm64v8 base's PyCUDA
    except ImportError as exc:
        return "PyCUDA's dtype registry cannot be imported: %s" % exc
    try:
        _fill_dtype_registry(respect_windows=True)
    except AttributeError as exc:
        return "PyCUDA's dtype registry fails with this numpy: %s" % exc
    return None


def main() -> int:
    import numpy

    problems = [p for p in (numpy_problem(numpy.__version__), pycuda_registry_problem()) if p]
    for problem in problems:
        print("jetson_check: %s" % problem, file=sys.stderr)
    if not problems:
        print("jetson_check: numpy %s and PyCUDA's dtype registry work together" % numpy.__version__)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
