"""``make demo``'s own speed check: the model alone, timed in the same run, next to the node's output rate.

Before the node starts, :func:`bare_rate` times the network alone at the node's parameters on a
frame of the recording (this also exports the ONNX file of the recording's frame size once, so the
node does not export it in the middle of the stream); :func:`add_to_report` puts it in the latency
report with ``output_vs_bare`` (the node's output rate / the model's; when the camera is slower than the
model, ``output_vs_input`` is the one that says whether the node keeps up), :func:`table_row` prints it.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import numpy as np


def bare_rate(params: Dict[str, Any], frame: bytes, seconds: float = 5.0) -> Dict[str, Any]:
    """The network alone at the node's parameters ``params`` (model, backend, input size, threads) on
    ``frame``: ``bare_hz`` (1 / mean) and ``bare_ms_p50``, over about ``seconds`` after one warm-up."""
    import cv2

    from depth_estimation.framepath.frames import decode
    from depth_estimation.framepath.pipeline import pipeline_from_params  # heavy: the model
    from depth_estimation.tools.bench import timed

    estimator = pipeline_from_params(params).estimator.load()
    prepared = estimator.prepare(cv2.cvtColor(decode(frame), cv2.COLOR_BGR2RGB))
    start = time.perf_counter()
    estimator.run(prepared)  # warm-up, and the time of one run
    runs = int(min(max(seconds / max(time.perf_counter() - start, 1e-3), 3), 200))
    ms, _ = timed(estimator.run, [prepared], runs, 0)
    return {"bare_hz": float(1000.0 / np.mean(ms)), "bare_ms_p50": float(np.percentile(ms, 50)),
            "bare_runs": runs, "backend": estimator.backend, "input_size": estimator.input_size}


def _rate(value: Any) -> Optional[float]:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return None
    return rate if np.isfinite(rate) and rate > 0 else None


def add_to_report(report: Dict[str, Any], bare: Dict[str, Any]) -> None:
    """``output_vs_bare``; and, when the camera is slower than the model (the student at 30 Hz),
    ``camera_limited`` with ``output_vs_input``: then output / alone says nothing about the node."""
    report["bare"] = bare
    output_hz, input_hz = (_rate(report["diagnostics"].get(k)) for k in ("output_hz", "input_hz"))
    report["output_vs_bare"] = round(output_hz / bare["bare_hz"], 2) if output_hz else None
    report["camera_limited"] = bool(input_hz and input_hz < 0.9 * bare["bare_hz"])
    report["output_vs_input"] = round(output_hz / input_hz, 2) if output_hz and input_hz else None


def table_row(report: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    bare = report.get("bare")
    if not bare:
        return None
    verdict = "output / alone = %s" % report.get("output_vs_bare")
    if report.get("camera_limited"):
        verdict += "; the camera is slower than the model: output / input = %s" % (
            report.get("output_vs_input"))
    return ("model alone, this run (Hz)", "%.2f (p50 %.1f ms, %s at %s; %s)" % (
        bare["bare_hz"], bare["bare_ms_p50"], bare["backend"], bare["input_size"], verdict))
