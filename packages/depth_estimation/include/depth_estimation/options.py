"""The command-line options every tool shares, in one place (like monodepth2's ``options.py``).

depth-eval, depth-da2k, depth-bench, depth-sweep, depth-distill, export and quantize all take
their model, backend, device, input size, threads and output options from here, so one option
has one name, one default, one help text and one meaning everywhere:

* ``--input-size N``: the short side of the network input in pixels, rounded to the model's
  multiple (14 for Depth-Anything-V2); ``0`` (the default) = the model's own size (518 for
  Depth-Anything-V2, 192 for the student), as ``input_size: 0`` means in the node;
* ``--backend``: ``auto`` (the default: the fastest installed for the device, see
  :func:`depth_estimation.runtime.runners.resolve_backend`) or one of :data:`BACKENDS`;
  ``--device``: one of :data:`DEVICES`;
* ``--threads N``: CPU threads for torch and ONNX Runtime, ``0`` = their default (all cores).

Imports only the standard library, so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, List, Optional

BACKENDS = ("torch", "onnxruntime", "tensorrt")
BACKEND_CHOICES = ("auto",) + BACKENDS  # what users may ask for: auto is resolved once, at start
DEVICES = ("auto", "cpu", "cuda")

MODEL_HELP = ("model spec: da2-small|da2-base|da2-large, random:<arch> (untrained), fastdepth-mnv3 "
              "folders, a Hugging Face id or folder, an original .pth or an exported .onnx; "
              "Depth-Anything-V2 specs take @hqqN or @hqqN-dq")
INPUT_SIZE_HELP = ("short side of the network input in pixels, rounded to the model's multiple "
                   "(14 for Depth-Anything-V2); 0 = the model's own size (518 for Depth-Anything-V2, "
                   "192 for the student; default 0)")


def input_size_value(size: Optional[int]) -> Optional[int]:
    """``--input-size`` as the estimator takes it: None for 0 (or None) = the model's own size."""
    if size is None or int(size) == 0:
        return None
    if int(size) < 0:
        raise ValueError("input size %d: use a positive short side, or 0 for the model's own" % size)
    return int(size)


def add_model(parser: argparse.ArgumentParser, flag: str = "--model", required: bool = True,
              help: str = MODEL_HELP) -> None:
    """The model spec, as ``--model`` (or a positional ``spec`` with ``flag="spec"``)."""
    if flag.startswith("-"):
        parser.add_argument(flag, required=required, help=help)
    else:
        parser.add_argument(flag, help=help)


def add_models(parser: argparse.ArgumentParser, flag: str, default: str) -> None:
    """A comma-separated list of model specs (``--variants`` of depth-bench, ``--models`` of depth-sweep)."""
    parser.add_argument(flag, type=comma_list, default=default, metavar="SPEC[,SPEC...]",
                        help="comma-separated list, each a %s (default %s)" % (MODEL_HELP, default))


def add_runtime(parser: argparse.ArgumentParser, device: bool = True, threads: bool = True,
                input_size: bool = True, backend: str = "auto") -> None:
    """``--backend`` (default ``backend``), ``--device``, ``--threads`` and ``--input-size``."""
    parser.add_argument("--backend", default=backend, choices=BACKEND_CHOICES,
                        help="inference backend; auto = TensorRT on a Jetson, CUDA (torch) on an NVIDIA "
                             "GPU, else ONNX Runtime (default %s)" % backend)
    if device:
        parser.add_argument("--device", default="auto", choices=DEVICES,
                            help="auto = CUDA when present, else the CPU (default auto)")
    if threads:
        add_threads(parser)
    if input_size:
        add_input_size(parser)


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch / ONNX Runtime; 0 = their default (all cores)")


def add_input_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-size", type=int, default=0, metavar="N", help=INPUT_SIZE_HELP)


def use_cpu_threads(threads: int) -> None:
    """Process-wide: torch's intra-op CPU threads (``threads`` > 0; 0 keeps torch's default, all cores).
    An entry point calls it once, before models load (the node, ``depth-live`` and every tool through
    :func:`estimator_kwargs`); a :class:`~.runtime.estimator.DepthEstimator` itself changes no
    process state and gives ``threads`` only to its own ONNX Runtime sessions. No torch (the robot
    image): nothing to set."""
    if int(threads) <= 0:
        return
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(int(threads))


def estimator_kwargs(args: argparse.Namespace, model: Optional[str] = None) -> Dict[str, Any]:
    """The :class:`~depth_estimation.runtime.estimator.DepthEstimator` arguments of parsed options; a
    tool's ``--threads`` is applied to the process here (torch's threads are process-wide)."""
    use_cpu_threads(getattr(args, "threads", 0))
    return {"model": model if model is not None else args.model, "backend": args.backend,
            "device": getattr(args, "device", "auto"), "threads": getattr(args, "threads", 0),
            "input_size": input_size_value(getattr(args, "input_size", 0))}


def add_json_csv(parser: argparse.ArgumentParser, csv: bool = True, plot: bool = False) -> None:
    """``--json`` / ``--csv`` / ``--plot`` result files, each written atomically."""
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON here (atomically)")
    if csv:
        parser.add_argument("--csv", metavar="FILE", help="write the result as CSV here (atomically)")
    if plot:
        parser.add_argument("--plot", metavar="FILE", help="write a PNG plot here (atomically)")


def add_force(parser: argparse.ArgumentParser, what: str = "the output") -> None:
    parser.add_argument("--force", action="store_true", help="replace %s if it exists" % what)


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (``--runs 0`` is no benchmark)."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
        if value < minimum:
            raise argparse.ArgumentTypeError("%d: at least %d" % (value, minimum))
        return value
    return check


def comma_list(text: str) -> List[str]:
    """``a,b, c`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [item.strip() for item in str(text).split(",") if item.strip()]


def comma_sizes(text: str) -> List[Optional[int]]:
    """A comma list of ``--input-size`` values; empty = ``[None]`` (the model's own size)."""
    try:
        sizes = [int(item) for item in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError("input sizes %r: expected comma-separated integers" % text) from None
    try:
        return [input_size_value(size) for size in sizes] or [None]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
