"""Library calls leave the process as they found it (issue 22, item 16): no matplotlib backend switched by
a figure, no frame-sized arrays kept by a module once their owner is gone, and the estimator's open
runners read under a lock while another thread may open or close one."""
import gc
import os
import threading
import tracemalloc

import numpy as np
import pytest
import yaml

from conftest import ROOT

ROBOT = os.path.join(ROOT, "assets", "calibrations", "csc22917")


@pytest.fixture
def other_backend():
    """matplotlib on a non-interactive backend that is not Agg (what an application might have chosen)."""
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield matplotlib
    matplotlib.use(before)


def test_figures_leave_the_matplotlib_backend_alone(tmp_path, other_backend):
    from depth_estimation.evaluation.ground_figure import write_ground_figure
    from depth_estimation.tools import bench_report, sweep

    disparity = np.linspace(0.1, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    path = write_ground_figure(str(tmp_path / "g.png"), np.zeros((48, 64, 3), np.uint8), disparity,
                               1.0 / disparity, disparity > 0.5, "a title")
    assert open(path, "rb").read(4) == b"\x89PNG"
    sweep.plot([{"model": "m", "bits": 32, "abs_rel": 0.1}, {"model": "m", "bits": 4, "abs_rel": 0.2}],
               str(tmp_path))
    assert os.path.isfile(str(tmp_path / "abs_rel_vs_bits.png"))
    bench_report.plot([{"variant": "v", "backend": "torch", "input_size": 518, "path": "bare", "fps": 3.0,
                        "input_hw": "518x686", "weight_bytes": 100}], str(tmp_path / "bench.png"))
    assert os.path.isfile(str(tmp_path / "bench.png"))
    assert other_backend.get_backend() == "svg"


def _retained_bytes(work) -> int:
    """Bytes still allocated (numpy arrays included) after ``work()`` ran and its result was dropped."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_no_module_keeps_frame_sized_arrays_once_their_owner_is_gone():
    """A 960x1280 stream's ground maps and rays (three float32 maps, ~15 MB) go with the aligner and the
    metric outputs that used them; nothing stays in a module-level cache."""
    from depth_estimation.framepath.metric import MetricOptions, MetricOutputs
    from depth_estimation.framepath.params import check_params
    from depth_estimation.io.paths import PACKAGE_DIR

    with open(os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")) as f:
        raw = yaml.safe_load(f)
    raw.update(metric=True, extrinsics_file=os.path.join(ROBOT, "extrinsic.yaml"))
    options = MetricOptions.from_params(check_params(raw))
    with open(os.path.join(ROBOT, "intrinsic.yaml")) as f:
        info = yaml.safe_load(f)
    disparity = np.linspace(0.2, 1.0, 960, dtype=np.float32)[:, None].repeat(1280, axis=1)

    def work():
        outputs = MetricOutputs(options, "")
        outputs.process(disparity, 0.0, info)
        assert outputs.aligner_for(info).candidates((960, 1280))[0].shape == (960, 1280)

    assert _retained_bytes(work) < 1 << 20


def test_the_open_runners_are_read_under_the_estimators_lock():
    from depth_estimation.runtime import memory
    from depth_estimation.runtime.estimator import DepthEstimator

    est = DepthEstimator("random:da2-small", backend="onnxruntime")
    entered = []

    class Recording:
        def __init__(self):
            self.lock = threading.Lock()

        def __enter__(self):
            entered.append(threading.current_thread().name)
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    class Runner:
        def gpu_mem_mb(self):
            return 42.0

    est._table = Recording()
    est._runners[(14, 14)] = Runner()
    assert memory.gpu_mem_mb(est) == 42.0 and entered
    # a runner being built (minutes for TensorRT) does not hold up a diagnostics read
    with est._lock:
        got = []
        reader = threading.Thread(target=lambda: got.append(memory.gpu_mem_mb(est)))
        reader.start()
        reader.join(10.0)
    assert got == [42.0]


def test_loading_an_estimator_leaves_torchs_threads_alone_the_entry_point_sets_them(tmp_path):
    import argparse

    import torch

    from depth_estimation import options
    from depth_estimation.runtime.estimator import DepthEstimator

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:
        DepthEstimator("random:fastdepth-mnv3", backend="torch", threads=want, input_size=64).load()
        assert torch.get_num_threads() == before  # a library call: the process as it was
        args = argparse.Namespace(model="random:fastdepth-mnv3", backend="torch", threads=want, input_size=64)
        options.estimator_kwargs(args)  # a tool's --threads: applied once, by the tool
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
