"""``depth-bench``'s results: the fields, the ratios between rows of one run, JSON/CSV/plot and the table."""
from __future__ import annotations

import csv
from typing import Any, Dict, List, Optional

import numpy as np

from depth_estimation.io.atomic import atomic_file, write_json

FIELDS = ["variant", "path", "backend", "input_size", "input_hw", "frame_hw", "runs", "latency_ms_p50",
          "latency_ms_p95", "fps", "weight_bytes", "file_bytes", "peak_rss_bytes", "gflops", "gflops_per_s",
          "matmul_gflops_per_s", "fidelity_abs_rel", "threads", "stream_hz", "frames_in", "frames_dropped",
          "dropped_by_stage", "vs_bare", "vs_base", "vs_torch", "vs_pipeline", "matmul_fraction", "note"]
TABLE_COLUMNS = ["variant", "path", "backend", "input_hw", "latency_ms_p50", "latency_ms_p95", "fps",
                 "vs_bare", "vs_base", "vs_torch", "vs_pipeline", "matmul_fraction", "frames_dropped",
                 "weight_bytes", "fidelity_abs_rel"]

def ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator`` for two measured figures; None when either is missing."""
    if not numerator or not denominator:
        return None
    return float(numerator) / float(denominator)


def add_ratios(rows: List[Dict[str, Any]]) -> None:
    """Each row's speed as ratios from the same run: ``vs_bare`` (fps / its cell's bare fps),
    ``vs_base`` (a quantized variant's fps / its fp32 base's, same backend and path),
    ``vs_torch`` (fps / torch eager bare, same variant and size), ``vs_pipeline`` (fps / transformers'
    pipeline, same variant and size) and ``matmul_fraction`` (achieved GFLOP/s / measured matmul rate)."""
    def find(variant, size, path, backend=None):
        for row in rows:
            if (row.get("variant"), row.get("input_size"), row.get("path")) == (variant, size, path) \
                    and (backend is None or row.get("backend") == backend) and row.get("fps"):
                return row["fps"]
        return None

    for row in rows:
        key = (row.get("variant"), row.get("input_size"))
        row["vs_bare"] = ratio(row.get("fps"), find(*key, "bare", row.get("backend")))
        base = str(row.get("variant")).split("@")[0]
        if base != row.get("variant"):
            row["vs_base"] = ratio(row.get("fps"), find(base, key[1], row.get("path"), row.get("backend")))
        row["vs_torch"] = ratio(row.get("fps"), find(*key, "bare", "torch"))
        row["vs_pipeline"] = ratio(row.get("fps"), find(*key, "pipeline"))
        row["matmul_fraction"] = ratio(row.get("gflops_per_s"), row.get("matmul_gflops_per_s"))


def write_outputs(rows: List[Dict], json_path: Optional[str], csv_path: Optional[str],
                  plot_path: Optional[str], meta: Dict) -> None:
    """The result files asked for; an OSError names the one that failed (``filename``)."""
    def write_csv(path: str) -> None:
        with atomic_file(path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    for path, write in ((json_path, lambda p: write_json(p, {"meta": meta, "rows": rows})),
                        (csv_path, write_csv), (plot_path, lambda p: plot(rows, p))):
        try:
            if path:
                write(path)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc


def plot(rows: List[Dict], path: str) -> None:
    """Frames per second of the bare, node and stream paths, and weight size, per variant/backend/size."""
    from matplotlib.figure import Figure  # heavy; a figure of its own, the process's backend untouched

    cells = []
    for row in rows:
        key = (row.get("variant"), row.get("backend"), row.get("input_size"))
        if row.get("fps") and key not in cells:
            cells.append(key)
    by_path = {(r.get("variant"), r.get("backend"), r.get("input_size"), r.get("path")): r for r in rows}
    sizes = {(r.get("variant"), r.get("backend"), r.get("input_size")): r.get("input_hw", "") for r in rows}
    labels = ["%s\n%s %s" % (v, b, sizes[(v, b, s)]) for v, b, s in cells]
    x = np.arange(len(cells))
    fig = Figure(figsize=(max(8, 1.8 * len(cells) + 4), 5))
    ax1, ax2 = fig.subplots(1, 2)
    for offset, name in zip((-0.27, 0.0, 0.27), ("bare", "node", "stream")):
        ax1.bar(x + offset, [(by_path.get(c + (name,)) or {}).get("fps") or 0 for c in cells], 0.27,
                label={"bare": "bare forward", "node": "node path, serial", "stream": "node stream"}[name])
    ax1.set_yscale("log")  # the student and Depth-Anything-V2 differ by 40x
    ax1.set_ylabel("frames per second (log scale)")
    ax1.set_title("throughput (higher is better)")
    ax1.legend()
    ax2.bar(x, [max((r.get("weight_bytes") or 0) for r in rows if (r.get("variant"), r.get("backend"),
                                                                   r.get("input_size")) == c) / 2 ** 20
                for c in cells], 0.5, color="tab:green")
    ax2.set_ylabel("weights in memory (MiB)")
    ax2.set_title("weight_bytes")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def format_value(value: Any) -> str:
    """A table cell: floats with 4 decimals below 1, else 1; None empty."""
    if isinstance(value, float):
        return "%.4f" % value if value < 1 else "%.1f" % value
    return "" if value is None else str(value)


def print_table(rows: List[Dict]) -> None:
    table = [TABLE_COLUMNS] + [[format_value(r.get(c)) for c in TABLE_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(TABLE_COLUMNS))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
