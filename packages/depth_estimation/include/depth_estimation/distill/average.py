"""``depth-distill average``: one student whose weights are the (weighted) mean of several students'.

    depth-distill average --students assets/models/fastdepth-duckietown runs/a/student \\
        --out runs/avg --half

Averaging the weights of fine-tunes that start from the same student (a "model soup", Wortsman
et al. 2022) keeps what they share and cancels part of what each run learned by chance; see the
README's student section for what it measured. The students must share one architecture
(``fastdepth-mnv3``; each is loaded and checked by :func:`fastdepth.load_student`). Floating-point
tensors (weights and batch-norm statistics) are averaged in float32, float16 files cast up; integer
buffers (batch-norm step counters, unused in inference) are taken from the first student.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional, Sequence

from depth_estimation.io.atomic import output_problem
from depth_estimation.models import fastdepth


def _load(path: str):
    try:
        return fastdepth.load_student(path)
    except (FileNotFoundError, ValueError) as exc:  # a run folder, a spec name, a foreign or broken config
        where = "" if path in str(exc) else "%s: " % path
        raise ValueError("%s%s (expected a student folder, e.g. <run>/student or "
                         "assets/models/fastdepth-duckietown)" % (where, exc)) from exc


def average_students(students: Sequence[str], weights: Optional[Sequence[float]] = None):
    """The student whose floating-point tensors are the ``weights``-weighted mean of the students'
    (normalized to sum 1; default: equal), eval mode."""
    if len(students) < 2:
        raise ValueError("average needs two students or more, got %d" % len(students))
    weights = [1.0] * len(students) if weights is None else [float(w) for w in weights]
    if len(weights) != len(students):
        raise ValueError("%d weights for %d students" % (len(weights), len(students)))
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be finite and non-negative with a positive sum, got %s" % (weights,))
    shares = [w / sum(weights) for w in weights]
    models = [_load(path) for path in students]
    states = [m.state_dict() for m in models]
    mean = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            mean[key] = sum(share * state[key].float() for share, state in zip(shares, states))
        else:
            mean[key] = first
    models[0].load_state_dict(mean, strict=True)
    return models[0].eval()


def add_average_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--students", required=True, nargs="+", metavar="STUDENT",
        help="student folders (e.g. assets/models/fastdepth-duckietown, <run>/student), two or more")
    add("--weights", type=float, nargs="+", default=None,
        help="one weight per student (normalized to sum 1; default: equal)")
    add("--out", required=True, help="the averaged student's folder (must not exist, or be empty)")
    add("--half", action="store_true",
        help="store float16 weights (half the bytes), like the shipped student")
    return parser


def run_average(args: argparse.Namespace) -> int:
    problem = output_problem(args.out, folder=True)
    if not problem and os.path.isdir(args.out) and os.listdir(args.out):
        problem = "%s exists and is not empty: choose another --out" % args.out
    if problem:
        print("depth-distill average: error: %s" % problem, file=sys.stderr)
        return 2
    try:
        model = average_students(args.students, args.weights)
        out = fastdepth.save_student(model, args.out, half=args.half)
    except (ValueError, OSError, RuntimeError) as exc:  # RuntimeError: safetensors/state-dict mismatch
        print("depth-distill average: error: %s" % exc, file=sys.stderr)
        return 2
    print("averaged %d students -> %s" % (len(args.students), out))
    return 0
