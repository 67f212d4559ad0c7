"""``depth-bench``: how fast, how big and how faithful each model variant is, in one run.

For every variant x backend x input size it measures, after warm-up, over ``--runs`` frames
(``--paths``, default all four):

* ``bare``: the backend alone on a prepared input;
* ``node``: the node's whole frame path in series in one thread (decode, preprocess, network,
  postprocess, colorize, JPEG encode) on real camera frames as JPEG bytes;
* ``stream``: the node's own threaded stream (decode | network | colorize+encode, latest-frame
  slots; :mod:`.bench_stream`) fed at ``--stream-hz`` (default 30, the DB21M camera; 0 = as fast as
  it takes frames): output fps, end-to-end p50/p95, frames dropped (by stage);
* ``pipeline``: for Depth-Anything-V2 on torch, transformers' ``pipeline("depth-estimation")`` on
  the same frames and size;
* ``metric``: once per run, what ``metric: true`` adds per 640x480 frame after the network (ground
  fit, metric depth, laser scan, obstacle distance, points; :func:`.bench_stream.metric_stats`).

Every row also carries its speed as ratios from the same run: ``vs_bare``, ``vs_torch`` (torch
eager), ``vs_pipeline`` (transformers) and ``matmul_fraction`` (of the fp32 matmul rate measured at
the start). Each cell runs in a fresh process, so ``peak_rss_bytes`` is that cell's own. Quantized
variants get ``fidelity_abs_rel`` against the same model in fp32 (scale-and-shift aligned).

    depth-bench --variants random:da2-small,random:da2-small@hqq4 --backends torch,onnxruntime \\
        --input-size 266 --runs 10 --json b.json --csv b.csv --plot b.png
    depth-bench --variants random:fastdepth-mnv3 --backends onnxruntime --paths bare,stream --stream-hz 0
"""
from __future__ import annotations

import argparse
import functools
import glob
import multiprocessing
import os
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from depth_estimation import options
from depth_estimation.evaluation.metrics import fit_scale_shift
from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.framepath.frames import decode
from depth_estimation.framepath.pipeline import DepthPipeline
from depth_estimation.io.atomic import output_problem, write_error
from depth_estimation.io.paths import ASSETS_DIR
from depth_estimation.io.paths import file_bytes as stored_bytes
from depth_estimation.models import hub
from depth_estimation.models.specs import ModelNotFound, ModelSpec, parse_spec
from depth_estimation.runtime import preprocess
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.tools.bench_report import FIELDS, add_ratios, print_table, write_outputs  # noqa: F401
from depth_estimation.tools.bench_stream import metric_stats, stream_stats

DEFAULT_FRAMES = os.path.join(ASSETS_DIR, "frames")
PATHS = ("bare", "node", "stream", "pipeline", "metric")
WEIGHT_SUFFIXES = (".safetensors", ".json", ".onnx")  # in a model folder, the files that hold the model


def load_frames(source: str, limit: int = 8) -> List[bytes]:
    """Camera frames as compressed bytes: a folder of JPEG/PNG images or a bag's CompressedImage frames."""
    if os.path.isdir(source):
        files = sorted(f for ext in ("jpg", "jpeg", "png")
                       for f in glob.glob(os.path.join(source, "*." + ext)))
        # re-encode as JPEG, as the camera sends them
        frames = [cv2.imencode(".jpg", cv2.imread(path), [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].tobytes()
                  for path in files[:limit]]
    else:
        from depth_estimation.io.bags import read_camera_frames  # optional: the bag readers

        frames = [f.data for f in read_camera_frames(source, limit)]
    if not frames:
        raise ValueError("no frames in %s" % source)
    return frames


def matmul_gflops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput, measured now (the ceiling a model could reach)."""
    import torch  # heavy

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(times) / 1e9


def count_gflops(net, hw) -> Optional[float]:
    import torch  # heavy
    from torch.nn.attention import SDPBackend, sdpa_kernel  # heavy
    from torch.utils.flop_counter import FlopCounterMode  # heavy

    try:  # attention on torch's math backend: the counter has no formula for the CPU flash kernel (it
        # would miss a third of Depth-Anything-V2-Small's FLOPs at 518)
        with FlopCounterMode(display=False) as counter, torch.inference_mode(), \
                sdpa_kernel([SDPBackend.MATH]):
            net(torch.zeros(1, 3, hw[0], hw[1]))
        return counter.get_total_flops() / 1e9
    except Exception:  # an op the counter cannot trace
        return None


def weights_path(spec: ModelSpec) -> Optional[str]:
    """Where ``spec`` keeps its weights on this machine: a quantized spec's folder in the cache, a
    spec's own file or folder, or the cached Hugging Face snapshot of released weights; None for
    random weights and for released weights that are not cached."""
    if spec.quant is not None:
        from depth_estimation.models.hqq import default_dir  # heavy: torch

        return default_dir(spec.base, spec.quant.bits, spec.quant.group_size)
    if spec.path is None and spec.hub_id is not None:
        return hub.cached_dir(spec.hub_id)
    return spec.path


def file_bytes(spec: ModelSpec) -> Optional[int]:
    """Bytes of the variant's weights on disk (what the robot stores), when they are files."""
    path = weights_path(spec)
    if path is None or not os.path.exists(path):
        return None
    return stored_bytes(path, WEIGHT_SUFFIXES)


def _stats(ms: Sequence[float]) -> Dict[str, float]:
    arr = np.asarray(ms)
    return {"latency_ms_p50": float(np.percentile(arr, 50)), "latency_ms_p95": float(np.percentile(arr, 95)),
            "fps": float(1000.0 / np.mean(arr))}


def timed(fn: Callable[[Any], Any], items: Sequence[Any], runs: int,
          warmup: int) -> Tuple[List[float], List[np.ndarray]]:
    """``fn`` on ``items`` in turn: ``warmup`` untimed calls, then ``runs`` timed ones. Returns the
    latencies (ms) and the outputs of the first pass over ``items`` (float32, HxW)."""
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


def _node_depth(pipe: DepthPipeline, frame: bytes) -> np.ndarray:
    """The node's whole path on one JPEG frame."""
    return pipe.process(frame, "jpeg").depth


def _pipeline_depth(pipe, image) -> np.ndarray:
    """transformers' depth-estimation pipeline on one PIL image."""
    return np.asarray(pipe(image)["predicted_depth"])


def _cell_sizes(est: DepthEstimator, hw: Tuple[int, int]) -> Dict[str, Any]:
    """weight_bytes, gflops and file_bytes of a loaded variant at input ``hw``."""
    from depth_estimation.models.hqq import weight_bytes  # heavy: torch

    sizes: Dict[str, Any] = {}
    if est.net is not None:
        sizes.update(weight_bytes=weight_bytes(est.net), gflops=count_gflops(est.net, hw))
    sizes["file_bytes"] = file_bytes(est.spec)
    onnx = est.onnx_path(hw)
    if onnx:  # what the runtime holds and what the robot stores is the ONNX file (weights dequantized)
        sizes["weight_bytes"] = sizes["file_bytes"] = stored_bytes(onnx)
    return sizes


def run_cell(cell: Dict) -> List[Dict]:
    """One variant x backend x input size: rows for the bare, node and pipeline paths (in a child process)."""
    import torch  # heavy: only in the cell's own process

    if cell["threads"]:
        torch.set_num_threads(cell["threads"])
    frames, runs, warmup = cell["frames"], cell["runs"], cell["warmup"]
    est = DepthEstimator(cell["variant"], input_size=cell["input_size"], backend=cell["backend"],
                         device="cpu").load()
    rgbs = [cv2.cvtColor(decode(f), cv2.COLOR_BGR2RGB) for f in frames]
    frame_hw = rgbs[0].shape[:2]
    hw = est.input_hw(*frame_hw)
    common = {"variant": cell["variant"], "backend": est.backend, "input_size": cell["input_size"],
              "input_hw": "%dx%d" % hw, "frame_hw": "%dx%d" % frame_hw, "runs": runs,
              "threads": torch.get_num_threads(), "matmul_gflops_per_s": cell["matmul_gflops_per_s"]}
    common.update(_cell_sizes(est, hw))
    paths, rows = cell["paths"], []
    ms, outs = timed(est.runner_for(hw), [preprocess.normalize(r, *hw) for r in rgbs],
                     runs if "bare" in paths else len(rgbs), warmup if "bare" in paths else 0)
    if "bare" in paths:
        rows.append(dict(common, path="bare", **_stats(ms)))
    if "node" in paths:
        ms, _ = timed(functools.partial(_node_depth, DepthPipeline(est, Colorizer())), frames, runs, warmup)
        rows.append(dict(common, path="node", **_stats(ms)))
    if "stream" in paths:
        stats = stream_stats(DepthPipeline(est, Colorizer()), frames, cell["stream_hz"], runs, warmup)
        rows.append(dict(common, path="stream", stream_hz=cell["stream_hz"], **stats))
    spec = est.spec
    if est.backend == "torch" and spec.family == "da2" and spec.quant is None and "pipeline" in paths:
        rows.append(dict(common, path="pipeline", **_pipeline_stats(est, rgbs, hw, runs, warmup)))
    for row in rows:
        if row.get("gflops"):
            row["gflops_per_s"] = row["gflops"] * row["fps"]
    peak = _peak_rss()
    for row in rows:
        row["peak_rss_bytes"] = peak
    rows = rows or [dict(common, path="none")]
    rows[0]["_outputs"] = outs
    return rows


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _pipeline_stats(est: DepthEstimator, rgbs: List[np.ndarray], hw: Tuple[int, int], runs: int,
                    warmup: int) -> Dict[str, float]:
    """transformers' pipeline("depth-estimation") with the same model and input size."""
    from PIL import Image  # heavy, like transformers below
    from transformers import DPTImageProcessor, pipeline  # heavy

    processor = DPTImageProcessor(do_resize=True, size={"height": hw[0], "width": hw[1]},
                                  keep_aspect_ratio=True, ensure_multiple_of=14, resample=3, do_pad=False)
    pipe = pipeline("depth-estimation", model=est.net.hf, image_processor=processor, device=-1)
    images = [Image.fromarray(r) for r in rgbs]
    ms, _ = timed(functools.partial(_pipeline_depth, pipe), images, runs, warmup)
    return _stats(ms)


def abs_rel_aligned(pred: np.ndarray, ref: np.ndarray) -> float:
    """AbsRel of ``pred`` against ``ref`` after a least-squares scale and shift (ref > 0 pixels),
    fitted with :func:`~depth_estimation.evaluation.metrics.fit_scale_shift`."""
    pred, ref = pred.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    valid = ref > 1e-6 * max(ref.max(), 1e-30)
    scale, shift = fit_scale_shift(pred, ref, valid)
    return float(np.mean(np.abs(scale * pred[valid] + shift - ref[valid]) / ref[valid]))


def check_variants(variants: Sequence[str]) -> None:
    """ValueError / ModelNotFound (one line each) unless ``variants`` is a non-empty list of specs."""
    if not variants:
        raise ValueError("no model variants to benchmark; give --variants SPEC[,SPEC...]")
    for variant in variants:
        parse_spec(variant)


def check_backends(backends: Sequence[str]) -> List[str]:
    """``backends`` as a list; ValueError unless it is a non-empty list of :data:`options.BACKEND_CHOICES`."""
    unknown = [b for b in backends if b not in options.BACKEND_CHOICES]
    if unknown or not backends:
        problem = "unknown backend " + ", ".join(map(repr, unknown)) if unknown else "no backend given"
        raise ValueError("%s; use a comma-separated list of %s"
                         % (problem, ", ".join(options.BACKEND_CHOICES)))
    return list(backends)


def path_list(text: str) -> List[str]:
    """``--paths``: a comma-separated list, each one of :data:`PATHS`."""
    paths = options.comma_list(text)
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise argparse.ArgumentTypeError("%s; use a comma-separated list of %s" % (
            "unknown path " + ", ".join(map(repr, unknown)) if unknown else "no path given", ",".join(PATHS)))
    return paths


def backend_list(text: str) -> List[str]:
    """``--backends``: a comma-separated list, each one of :data:`options.BACKEND_CHOICES`."""
    try:
        return check_backends(options.comma_list(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reference_cells(cells: List[Dict], frames: List[bytes]) -> List[Dict]:
    """The fp32 cells that fidelity needs and ``cells`` lack: the base of every quantized variant,
    same backend and size, run once over the frames."""
    have = {(c["variant"], c["backend"], c["input_size"]) for c in cells}
    refs = {(parse_spec(c["variant"]).base, c["backend"], c["input_size"]) for c in cells
            if parse_spec(c["variant"]).quant is not None}
    return [dict(cells[0], variant=v, backend=b, input_size=s, runs=len(frames), warmup=0,
                 paths=("bare",))
            for v, b, s in sorted(refs, key=str) if (v, b, s) not in have]


def _failed_row(cell: Dict, exc: BaseException) -> Dict:
    return dict(variant=cell["variant"], backend=cell["backend"], input_size=cell["input_size"], path="bare",
                note="failed: %s: %s" % (type(exc).__name__, exc))


def _add_fidelity(rows: List[Dict], outputs: Dict) -> None:
    """``fidelity_abs_rel`` of every quantized row: its outputs against its fp32 base's."""
    for row in rows:
        spec = parse_spec(row["variant"])
        ref = outputs.get((spec.base, row["backend"], row["input_size"]))
        mine = outputs.get((row["variant"], row["backend"], row["input_size"]))
        if spec.quant is not None and ref and mine:
            row["fidelity_abs_rel"] = float(np.mean([abs_rel_aligned(p, r) for p, r in zip(mine, ref)]))


def run(variants: Sequence[str], backends: Sequence[str], sizes: Sequence[Optional[int]], frames: List[bytes],
        runs: int, warmup: int, threads: int = 0, paths: Sequence[str] = PATHS,
        stream_hz: float = 30.0) -> List[Dict]:
    """Every variant x backend x size, each cell in a fresh process; ValueError / ModelNotFound on a
    bad spec or backend before any work."""
    check_variants(variants)
    check_backends(backends)
    gf = matmul_gflops_per_s()
    cells = [dict(variant=v, backend=b, input_size=s, frames=frames, runs=runs, warmup=warmup,
                  threads=threads, matmul_gflops_per_s=gf, paths=tuple(paths), stream_hz=float(stream_hz))
             for v in variants for b in backends for s in sizes]
    rows, outputs = [], {}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for cell in tqdm(cells + _reference_cells(cells, frames), desc="depth-bench", unit="cell"):
            try:
                cell_rows = pool.apply(run_cell, (cell,))
            except Exception as exc:  # one broken cell must not lose the others
                cell_rows = [_failed_row(cell, exc)]
            key = (cell["variant"], cell["backend"], cell["input_size"])
            outputs[key] = cell_rows[0].pop("_outputs", None)
            if cell in cells:
                rows.extend(r for r in cell_rows if r.get("path") != "none")
    _add_fidelity(rows, outputs)
    if "metric" in paths:  # the metric outputs' added cost per camera frame: one row, model-independent
        rows.append(dict(variant="metric-outputs", path="metric", backend="numpy", runs=max(runs, 20),
                         **metric_stats(max(runs, 20), warmup)))
    add_ratios(rows)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depth-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_models(parser, "--variants", "random:da2-small")
    parser.add_argument("--backends", type=backend_list, default="auto", metavar="NAME[,NAME...]",
                        help="comma-separated inference backends, each one of %s (default auto: the "
                        "fastest installed, as in the node)" % ", ".join(options.BACKEND_CHOICES))
    parser.add_argument("--input-size", type=options.comma_sizes, default="0", metavar="N[,N...]",
                        help="comma-separated input sizes, each run in turn; each is the "
                        + options.INPUT_SIZE_HELP)
    options.add_threads(parser)
    parser.add_argument("--runs", type=options.count(1), default=10,
                        help="timed frames per path (default 10)")
    parser.add_argument("--warmup", type=options.count(0), default=2, help="untimed frames first (default 2)")
    parser.add_argument("--frames", default=DEFAULT_FRAMES, help="a folder of images or a bag")
    parser.add_argument("--paths", type=path_list, default=",".join(PATHS), metavar="PATH[,PATH...]",
                        help="which paths to measure, of %s (default all)" % ",".join(PATHS))
    parser.add_argument("--stream-hz", type=float, default=30.0, metavar="HZ",
                        help="camera rate of the stream path (default 30, the DB21M's; 0 = as fast as the "
                        "node's stream takes frames)")
    options.add_json_csv(parser, plot=True)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    problems = [output_problem(path) for path in (args.json, args.csv, args.plot) if path]
    if any(problems):  # before hours of measuring
        print("\n".join("error: %s" % p for p in problems if p), file=sys.stderr)
        return 2
    try:
        check_variants(args.variants)  # one line on a bad spec, before frames are read or a process starts
        frames = load_frames(args.frames)
        rows = run(args.variants, args.backends, args.input_size, frames, args.runs, args.warmup,
                   args.threads, args.paths, args.stream_hz)
    except (ValueError, ModelNotFound, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    meta = {"command": " ".join(["depth-bench"] + (argv if argv is not None else sys.argv[1:])),
            "frames": args.frames, "cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print_table(rows)
    try:
        write_outputs(rows, args.json, args.csv, args.plot, meta)
    except OSError as exc:
        print("error: %s" % write_error(exc.filename or "the results", exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
