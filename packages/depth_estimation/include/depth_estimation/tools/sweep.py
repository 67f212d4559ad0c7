"""``depth-sweep``: models x precisions -> NYU metrics, DA-2K accuracy, latency and size, one table.

    depth-sweep --models da2-small,da2-base,da2-large,runs/s1/student \\
        --precisions fp32,hqq8,hqq4,hqq3,hqq2,hqq1 --nyu-bag bags/nyu_test.bag --da2k DA-2K/ --out sweep/

Each cell is a model spec with the precision as its suffix (``da2-small@hqq4``: the same name as
in the node, the benchmark and the evaluator; ``fp32`` = no suffix; the student has only fp32).
Results go to ``<out>/sweep.json`` and ``sweep.csv`` after every cell (atomically), so an
interrupted sweep resumes where it stopped (finished cells are skipped), and to PNG plots of
accuracy, latency and size against bits, one line per model.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from depth_estimation import options
from depth_estimation.evaluation import da2k, evaluate
from depth_estimation.evaluation.metrics import ALIGN_MODES
from depth_estimation.io.atomic import atomic_file, output_problem, write_json
from depth_estimation.models.specs import ModelNotFound, parse_spec
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.tools import bench

BITS = {"fp32": 32, "hqq8": 8, "hqq4": 4, "hqq3": 3, "hqq2": 2, "hqq1": 1}
COLUMNS = ["variant", "model", "precision", "bits", "abs_rel", "delta1", "rmse", "nyu_frames",
           "da2k_accuracy", "latency_ms_p50", "weight_bytes", "file_bytes"]


def variant(model: str, precision: str) -> Optional[str]:
    """The model spec of a cell, or None where the precision does not apply (HQQ on the student)."""
    if precision not in BITS:
        raise ValueError("precision %r; use one of %s" % (precision, ", ".join(BITS)))
    if precision == "fp32":
        return model
    return None if parse_spec(model).family != "da2" else "%s@%s" % (model, precision)


def run_cell(spec: str, nyu_bag: Optional[str], da2k_root: Optional[str], input_size: Optional[int],
             backend: str, align: str) -> Dict:
    """One cell: load ``spec`` once, score it on the NYU bag and/or DA-2K, measure its sizes."""
    from depth_estimation.models.hqq import weight_bytes  # heavy: torch

    est = DepthEstimator(spec, input_size=input_size, backend=backend).load()
    row = {"weight_bytes": weight_bytes(est.net) if est.net is not None else None,
           "file_bytes": bench.file_bytes(est.spec)}
    if nyu_bag:
        result = evaluate.evaluate(nyu_bag, align, estimator=est)
        row.update({k: result["metrics"][k] for k in ("abs_rel", "delta1", "rmse")},
                   nyu_frames=result["frames"])
    if da2k_root:
        row["da2k_accuracy"] = da2k.score(da2k.from_model(da2k_root, est), da2k_root, "disparity")["accuracy"]
    row["latency_ms_p50"] = est.timer.percentile("infer", 50)
    return row


def sweep(models: Sequence[str], precisions: Sequence[str], out: str, nyu_bag: Optional[str] = None,
          da2k_root: Optional[str] = None, input_size: Optional[int] = None, backend: str = "torch",
          align: str = "lsq-disparity", progress: bool = True) -> List[Dict]:
    if not nyu_bag and not da2k_root:
        raise ValueError("give --nyu-bag and/or --da2k: there is nothing to score")
    if not models or not precisions:
        raise ValueError("give --models and --precisions: there are no cells")
    for model in models:
        parse_spec(model)  # a bad spec fails here, not after the cells before it
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "sweep.json")
    done = {}
    if os.path.exists(path):  # resume: keep finished cells
        with open(path) as f:
            done = {r["variant"]: r for r in json.load(f)["rows"]}
    cells = [(m, p, variant(m, p)) for m in models for p in precisions]
    rows = [done[v] for _m, _p, v in cells if v in done]
    todo = [(m, p, v) for m, p, v in cells if v is not None and v not in done]
    for model, precision, spec in tqdm(todo, desc="depth-sweep", unit="cell", disable=not progress):
        row = {"variant": spec, "model": model, "precision": precision, "bits": BITS[precision]}
        row.update(run_cell(spec, nyu_bag, da2k_root, input_size, backend, align))
        rows.append(row)
        write_results(out, rows, {"nyu_bag": nyu_bag, "da2k": da2k_root, "input_size": input_size,
                                  "backend": backend, "align": align})
    plot(rows, out)
    return rows


def write_results(out: str, rows: List[Dict], meta: Dict) -> None:
    write_json(os.path.join(out, "sweep.json"), {"meta": meta, "rows": rows})
    with atomic_file(os.path.join(out, "sweep.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: List[Dict], out: str) -> None:
    """One PNG per measure: the measure against bits, one line per model."""
    from matplotlib.figure import Figure  # heavy; a figure of its own, the process's backend untouched

    for key, label in (("abs_rel", "NYU AbsRel (lower is better)"), ("delta1", "NYU delta1"),
                       ("da2k_accuracy", "DA-2K accuracy"), ("latency_ms_p50", "latency p50 (ms)"),
                       ("weight_bytes", "weights in memory (bytes)")):
        series = {}
        for r in rows:
            if r.get(key) is not None:
                series.setdefault(r["model"], []).append((r["bits"], r[key]))
        if not series:
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for model, points in sorted(series.items()):
            points.sort()
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(BITS.values())))
        ax.set_xticklabels([str(b) for b in sorted(set(BITS.values()))])
        ax.set_xlabel("bits per backbone weight (32 = fp32)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_file(os.path.join(out, "%s_vs_bits.png" % key), "wb") as f:
            fig.savefig(f, format="png", dpi=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depth-sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_models(parser, "--models", "da2-small,da2-base,da2-large")
    parser.add_argument("--precisions", type=options.comma_list, default=",".join(BITS), metavar="P[,P...]",
                        help="comma-separated, each one of %s (default all)" % ", ".join(BITS))
    parser.add_argument("--nyu-bag", help="an NYU bag from depth-nyu2bag")
    parser.add_argument("--da2k", help="the DA-2K folder")
    options.add_runtime(parser, device=False, threads=False, input_size=True)
    parser.add_argument("--align", default="lsq-disparity", choices=ALIGN_MODES,
                        help="alignment of the prediction to the NYU ground truth (default lsq-disparity)")
    parser.add_argument("--out", required=True, help="folder for sweep.json, sweep.csv and the plots")
    options.add_progress(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    problem = output_problem(args.out, folder=True)
    if problem:  # before any model loads
        print("error: %s" % problem, file=sys.stderr)
        return 2
    try:
        rows = sweep(args.models, args.precisions, args.out, args.nyu_bag, args.da2k,
                     options.input_size_value(args.input_size), args.backend, args.align, args.progress)
    except (ValueError, ModelNotFound, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    for r in rows:
        print("  ".join("%s=%s" % (k, ("%.4g" % r[k]) if isinstance(r.get(k), float) else r.get(k))
                        for k in COLUMNS if r.get(k) is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
