"""The process's memory for diagnostics: resident memory and GPU memory in use (stdlib only).

:func:`rss_mb` reads ``/proc/self/status`` (Linux; the peak from ``resource`` elsewhere).
:func:`gpu_mem_mb` asks a CUDA runtime that is *already loaded* (never imports one: importing
``pycuda.autoinit`` or initialising torch's CUDA would create a context just to measure it): an
estimator's TensorRT runner (PyCUDA ``mem_get_info`` in its context), else torch's CUDA allocator
when torch has initialised CUDA. On a Jetson, CPU and GPU share one RAM: ``mem_get_info`` then counts
the memory in use by the whole board, and ``rss_mb`` already includes most of the process's GPU
buffers.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, Optional

_STATUS = "/proc/self/status"


def proc_field_mb(path: str, field: str) -> Optional[float]:
    """The ``field:`` line (in kB) of a /proc file such as /proc/meminfo, in MiB; None when unreadable."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb() -> Optional[float]:
    """Resident memory of this process in MiB (None when unreadable)."""
    rss = proc_field_mb(_STATUS, "VmRSS")
    if rss is not None:
        return rss
    try:
        import resource  # Unix only: the peak, the closest there is without /proc

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    except (ImportError, OSError, ValueError):
        return None


def _runner_gpu_mem(estimator: Any) -> Optional[float]:
    open_runners = getattr(estimator, "open_runners", None)
    for runner in open_runners() if callable(open_runners) else ():
        measure = getattr(runner, "gpu_mem_mb", None)
        if callable(measure):
            return measure()
    return None


def _torch_gpu_mem() -> Optional[float]:
    torch = sys.modules.get("torch")  # only when loaded anyway; never imported here
    cuda = getattr(torch, "cuda", None)
    if cuda is None or not cuda.is_available() or not cuda.is_initialized():
        return None
    return cuda.memory_reserved() / float(1 << 20)


def gpu_mem_mb(estimator: Any = None) -> Optional[float]:
    """GPU memory in use in MiB: the estimator's TensorRT runner's view (device-wide), else torch's
    reserved memory (this process); None when no CUDA runtime is loaded or it cannot tell."""
    try:
        value = _runner_gpu_mem(estimator) if estimator is not None else None
        return value if value is not None else _torch_gpu_mem()
    except Exception:  # noqa: BLE001 - a diagnostic must never take the node down (CUDA errors vary)
        return None


def memory_stats(estimator: Any = None) -> Dict[str, Optional[float]]:
    """``{"rss_mb": ..., "gpu_mem_mb": ...}`` rounded to 0.1 MiB (None where not readable)."""
    rss, gpu = rss_mb(), gpu_mem_mb(estimator)
    return {"rss_mb": None if rss is None else round(rss, 1),
            "gpu_mem_mb": None if gpu is None else round(gpu, 1)}
