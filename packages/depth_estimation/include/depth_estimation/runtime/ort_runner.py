"""The ONNX Runtime backend: :class:`OrtRunner` runs an exported ONNX file (CPU, or CUDA with
onnxruntime-gpu). Imports without torch and without onnxruntime (then the runner says so)."""
from __future__ import annotations

import os
import sys

import numpy as np

from depth_estimation.options import DEVICES
from depth_estimation.runtime.runners import BackendUnavailable, as_depth, check_input


def _default_threads() -> int:
    torch = sys.modules.get("torch")  # torch's thread count when it is loaded anyway; never imported here
    return (torch.get_num_threads() if torch is not None else 0) or os.cpu_count() or 1


# ONNX Runtime's intra-op worker threads spin between operators by default. Off here: on this project's
# 2-core CPU, with anything else running (the node decodes, colorizes and publishes beside inference),
# spinning workers take the cores the others need: random:da2-small at 266 ran 1.28x faster (518:
# 1.06-1.12x) without spinning, interleaved in one run (README, "ONNX Runtime export targets").
SPINNING = False


class OrtRunner:
    """An exported ONNX file in ONNX Runtime (CUDA execution provider when asked for and present).
    ``threads`` intra-op threads (0: torch's count when torch is loaded, else the CPU count);
    ``spinning``: let idle worker threads spin (:data:`SPINNING`)."""

    backend = "onnxruntime"

    def __init__(self, onnx_path: str, device: str = "auto", threads: int = 0, spinning: bool = SPINNING):
        try:
            import onnxruntime as ort  # optional: the other backends work without it
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime: not installed here (pip3 install onnxruntime)") from exc
        if device not in DEVICES:
            raise ValueError("onnxruntime: device %r; use %s" % (device, ", ".join(DEVICES)))
        if not os.path.isfile(onnx_path):
            raise FileNotFoundError("onnxruntime: no ONNX file %s (export one with "
                                    "python3 -m depth_estimation.export)" % onnx_path)
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device == "cuda" and not has_cuda:
            raise BackendUnavailable("onnxruntime: device 'cuda' requested but this onnxruntime has no "
                                     "CUDAExecutionProvider (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider"] if device != "cpu" and has_cuda else []
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads) if threads > 0 else _default_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.path = onnx_path
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(onnx_path, sess_options=options,
                                            providers=providers + ["CPUExecutionProvider"])
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        hw = tuple(inp.shape[2:]) if len(inp.shape) == 4 else ()
        self.input_hw = hw if len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw) else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_hw, "OrtRunner(%s)" % os.path.basename(self.path))
        return as_depth(self.session.run([self.output_name], {self.input_name: x})[0])
