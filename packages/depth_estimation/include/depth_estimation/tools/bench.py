"""``depth-bench``: how fast, how big and how faithful each model variant is, in one run.

For every variant x backend x input size it measures, after warm-up, over ``--runs`` frames:
the bare forward (``path=bare``: the backend on a prepared input), the node's full path
(``path=node``: decode, preprocess, infer, postprocess, colorize, JPEG encode, on real camera
frames as JPEG bytes) and, for Depth-Anything-V2 on torch, transformers'
``pipeline("depth-estimation")`` on the same frames and size (``path=pipeline``). Each cell runs
in a fresh process, so ``peak_rss_bytes`` is that cell's own. Quantized variants get
``fidelity_abs_rel`` against the same model in fp32 (scale-and-shift aligned).

    python3 -m depth_estimation.bench --variants random:da2-small,random:da2-small@hqq4 \\
        --backends torch,onnxruntime --input-size 266 --runs 10 --json b.json --csv b.csv --plot b.png
"""
from __future__ import annotations

import argparse
import csv
import glob
import multiprocessing
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from depth_estimation.runtime import preprocess
from depth_estimation.models import hqq as quantize
from depth_estimation.io.atomic import atomic_file, write_json
from depth_estimation.io.paths import ASSETS_DIR
from depth_estimation.models.specs import parse_spec

DEFAULT_FRAMES = os.path.join(ASSETS_DIR, "frames")
FIELDS = ["variant", "path", "backend", "input_size", "input_hw", "frame_hw", "runs", "latency_ms_p50",
          "latency_ms_p95", "fps", "weight_bytes", "file_bytes", "peak_rss_bytes", "gflops", "gflops_per_s",
          "matmul_gflops_per_s", "fidelity_abs_rel", "threads", "note"]


def load_frames(source: str, limit: int = 8) -> List[bytes]:
    """Camera frames as compressed bytes: a folder of JPEG/PNG images or a bag's CompressedImage frames."""
    if os.path.isdir(source):
        files = sorted(f for ext in ("jpg", "jpeg", "png") for f in glob.glob(os.path.join(source, "*." + ext)))
        frames = []
        for path in files[:limit]:  # re-encode as JPEG, as the camera sends them
            frames.append(cv2.imencode(".jpg", cv2.imread(path), [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].tobytes())
    else:
        from depth_estimation.io.bags import read_camera_frames

        frames = [f.data for f in read_camera_frames(source, limit)]
    if not frames:
        raise ValueError("no frames in %s" % source)
    return frames


def matmul_gflops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput, measured now (the ceiling a model could reach)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times) / 1e9


def count_gflops(net, hw) -> Optional[float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(torch.zeros(1, 3, hw[0], hw[1]))
        return counter.get_total_flops() / 1e9
    except Exception:  # an op the counter cannot trace
        return None


def file_bytes(spec) -> Optional[int]:
    """Bytes of the variant's weights on disk (what the robot stores), when they are files."""
    path = spec.path
    if spec.quant is not None:
        from depth_estimation.models.hqq import default_dir

        path = default_dir(spec.base, spec.quant.bits, spec.quant.group_size)
    if path is None:
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _d, files in os.walk(path) for f in files
               if f.endswith((".safetensors", ".json", ".onnx")))


def _stats(ms: Sequence[float]) -> Dict[str, float]:
    arr = np.asarray(ms)
    return {"latency_ms_p50": float(np.percentile(arr, 50)), "latency_ms_p95": float(np.percentile(arr, 95)),
            "fps": float(1000.0 / np.mean(arr))}


def run_cell(cell: Dict) -> List[Dict]:
    """One variant x backend x input size: rows for the bare, node and pipeline paths (in a child process)."""
    import torch

    from depth_estimation.framepath.colorize import Colorizer
    from depth_estimation.runtime.estimator import DepthEstimator
    from depth_estimation.framepath.frames import decode
    from depth_estimation.framepath.pipeline import DepthPipeline

    if cell["threads"]:
        torch.set_num_threads(cell["threads"])
    frames, runs, warmup = cell["frames"], cell["runs"], cell["warmup"]
    est = DepthEstimator(cell["variant"], input_size=cell["input_size"], backend=cell["backend"], device="cpu").load()
    rgbs = [cv2.cvtColor(decode(f), cv2.COLOR_BGR2RGB) for f in frames]
    frame_hw = rgbs[0].shape[:2]
    hw = est.input_hw(*frame_hw)
    inputs = [preprocess.normalize(r, *hw) for r in rgbs]
    runner = est.runner_for(hw)
    common = {"variant": cell["variant"], "backend": cell["backend"], "input_size": cell["input_size"],
              "input_hw": "%dx%d" % hw, "frame_hw": "%dx%d" % frame_hw, "runs": runs,
              "threads": torch.get_num_threads(), "matmul_gflops_per_s": cell["matmul_gflops_per_s"]}
    if est.net is not None:
        common.update(weight_bytes=quantize.weight_bytes(est.net), gflops=count_gflops(est.net, hw))
    common["file_bytes"] = file_bytes(est.spec)
    onnx = est.onnx_path(hw)
    if onnx:  # what the runtime holds and what the robot stores is the ONNX file (weights dequantized)
        common["weight_bytes"] = common["file_bytes"] = os.path.getsize(onnx)

    def timed(fn, items):
        for i in range(warmup):
            fn(items[i % len(items)])
        ms, outs = [], []
        for i in range(runs):
            start = time.perf_counter()
            out = fn(items[i % len(items)])
            ms.append((time.perf_counter() - start) * 1000.0)
            if i < len(items):
                outs.append(np.asarray(out, dtype=np.float32).reshape(out.shape[-2:]))
        return ms, outs

    rows = []
    ms, outs = timed(runner, inputs)
    bare = dict(common, path="bare", **_stats(ms))
    rows.append(bare)
    pipe = DepthPipeline(est, Colorizer())
    ms, _ = timed(lambda f: pipe.process(f, "jpeg").depth, frames)
    rows.append(dict(common, path="node", **_stats(ms)))
    if cell["backend"] == "torch" and est.spec.family == "da2" and est.spec.quant is None and cell["with_pipeline"]:
        rows.append(dict(common, path="pipeline", **_pipeline_stats(est, rgbs, hw, timed)))
    for row in rows:
        if row.get("gflops"):
            row["gflops_per_s"] = row["gflops"] * row["fps"]
    peak = _peak_rss()
    for row in rows:
        row["peak_rss_bytes"] = peak
    rows[0]["_outputs"] = outs
    return rows


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _pipeline_stats(est, rgbs, hw, timed) -> Dict:
    """transformers' pipeline("depth-estimation") with the same model and input size."""
    from PIL import Image
    from transformers import DPTImageProcessor, pipeline

    processor = DPTImageProcessor(do_resize=True, size={"height": hw[0], "width": hw[1]}, keep_aspect_ratio=True,
                                  ensure_multiple_of=14, resample=3, do_pad=False)
    pipe = pipeline("depth-estimation", model=est.net.hf, image_processor=processor, device=-1)
    images = [Image.fromarray(r) for r in rgbs]
    ms, _ = timed(lambda im: np.asarray(pipe(im)["predicted_depth"]), images)
    return _stats(ms)


def abs_rel_aligned(pred: np.ndarray, ref: np.ndarray) -> float:
    """AbsRel of ``pred`` against ``ref`` after a least-squares scale and shift (ref > 0 pixels)."""
    pred, ref = pred.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    valid = ref > 1e-6 * max(ref.max(), 1e-30)
    a = np.stack([pred[valid], np.ones(valid.sum())], 1)
    scale, shift = np.linalg.lstsq(a, ref[valid], rcond=None)[0]
    return float(np.mean(np.abs(scale * pred[valid] + shift - ref[valid]) / ref[valid]))


def run(variants: Sequence[str], backends: Sequence[str], sizes: Sequence[Optional[int]], frames: List[bytes],
        runs: int, warmup: int, threads: int = 0, with_pipeline: bool = True) -> List[Dict]:
    from tqdm import tqdm

    for v in variants:
        parse_spec(v)  # fail before any work on a bad spec
    gf = matmul_gflops_per_s()
    cells = [dict(variant=v, backend=b, input_size=s, frames=frames, runs=runs, warmup=warmup, threads=threads,
                  matmul_gflops_per_s=gf, with_pipeline=with_pipeline)
             for v in variants for b in backends for s in sizes]
    # fp32 references for fidelity: the base of every quantized variant, same backend and size
    refs = {(parse_spec(c["variant"]).base, c["backend"], c["input_size"]) for c in cells
            if parse_spec(c["variant"]).quant is not None}
    extra = [dict(cells[0], variant=v, backend=b, input_size=s, runs=len(frames), warmup=0, with_pipeline=False)
             for v, b, s in refs if not any((c["variant"], c["backend"], c["input_size"]) == (v, b, s) for c in cells)]
    rows, outputs = [], {}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for cell in tqdm(cells + extra, desc="depth-bench", unit="cell"):
            try:
                cell_rows = pool.apply(run_cell, (cell,))
            except Exception as exc:  # one broken cell must not lose the others
                cell_rows = [dict(variant=cell["variant"], backend=cell["backend"], input_size=cell["input_size"],
                                  path="bare", note="failed: %s: %s" % (type(exc).__name__, exc))]
            key = (cell["variant"], cell["backend"], cell["input_size"])
            outputs[key] = cell_rows[0].pop("_outputs", None)
            if cell in cells:
                rows.extend(cell_rows)
    for row in rows:
        spec = parse_spec(row["variant"])
        ref = outputs.get((spec.base, row["backend"], row["input_size"]))
        mine = outputs.get((row["variant"], row["backend"], row["input_size"]))
        if spec.quant is not None and ref and mine:
            row["fidelity_abs_rel"] = float(np.mean([abs_rel_aligned(p, r) for p, r in zip(mine, ref)]))
    return rows


def write_outputs(rows: List[Dict], json_path: Optional[str], csv_path: Optional[str],
                  plot_path: Optional[str], meta: Dict) -> None:
    if json_path:
        write_json(json_path, {"meta": meta, "rows": rows})
    if csv_path:
        with atomic_file(csv_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    if plot_path:
        plot(rows, plot_path)


def plot(rows: List[Dict], path: str) -> None:
    """Latency (bare and node paths) and weight size per variant/backend/size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bare = [r for r in rows if r.get("path") == "bare" and r.get("latency_ms_p50")]
    node = {(r["variant"], r["backend"], r["input_size"]): r for r in rows if r.get("path") == "node"}
    labels = ["%s\n%s %s" % (r["variant"], r["backend"], r["input_hw"]) for r in bare]
    x = np.arange(len(bare))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(bare) + 4), 5))
    ax1.bar(x - 0.2, [r["latency_ms_p50"] for r in bare], 0.4, label="bare forward")
    ax1.bar(x + 0.2, [node.get((r["variant"], r["backend"], r["input_size"]), {}).get("latency_ms_p50", 0)
                      for r in bare], 0.4, label="node path")
    ax1.set_yscale("log")  # the student and Depth-Anything-V2 differ by 40x
    ax1.set_ylabel("latency p50 (ms, log scale)")
    ax1.set_title("latency per frame (lower is better)")
    ax1.legend()
    ax2.bar(x, [(r.get("weight_bytes") or 0) / 2 ** 20 for r in bare], 0.5, color="tab:green")
    ax2.set_ylabel("weights in memory (MiB)")
    ax2.set_title("weight_bytes")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def print_table(rows: List[Dict]) -> None:
    cols = ["variant", "path", "backend", "input_hw", "latency_ms_p50", "latency_ms_p95", "fps", "weight_bytes",
            "gflops", "fidelity_abs_rel"]
    def fmt(v):
        if isinstance(v, float):
            return "%.4f" % v if v < 1 else "%.1f" % v
        return "" if v is None else str(v)
    table = [cols] + [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="depth-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="random:da2-small", help="comma-separated model specs")
    parser.add_argument("--backends", default="torch", help="comma-separated: torch, onnxruntime, tensorrt")
    parser.add_argument("--input-size", default="", help="comma-separated short sides; 0 or nothing = each model's own")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--frames", default=DEFAULT_FRAMES, help="a folder of images or a bag")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the transformers pipeline rows")
    parser.add_argument("--json")
    parser.add_argument("--csv")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    sizes = [int(s) or None for s in args.input_size.split(",") if s.strip()] or [None]
    try:
        frames = load_frames(args.frames)
        rows = run([v.strip() for v in args.variants.split(",") if v.strip()],
                   [b.strip() for b in args.backends.split(",") if b.strip()], sizes, frames,
                   args.runs, args.warmup, args.threads, not args.no_pipeline)
    except ValueError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    meta = {"command": " ".join(["depth-bench"] + (argv if argv is not None else sys.argv[1:])),
            "frames": args.frames, "cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_outputs(rows, args.json, args.csv, args.plot, meta)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
