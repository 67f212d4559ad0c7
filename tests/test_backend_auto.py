"""``backend: auto`` (issue 21): the fastest backend installed for the device, resolved once at start,
named in the start log and the diagnostics; the node, the image and the tools default to it."""
import os

import pytest
import yaml

from depth_estimation import options
from depth_estimation.framepath.params import check_params
from depth_estimation.framepath.pipeline import start_pipeline
from depth_estimation.io.paths import PACKAGE_DIR
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.runtime.runners import (BackendUnavailable, available_backends, choose_backend,
                                              nvidia_gpu, resolve_backend)
from depth_estimation.tools import bench

ALL = ("torch", "onnxruntime", "tensorrt")
CONFIG = os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")


@pytest.mark.parametrize("installed,onnx_only,device,torch_gpu,ort_gpu,want", [
    (ALL, False, "auto", False, False, "tensorrt"),  # the Jetson image
    (("onnxruntime", "tensorrt"), True, "auto", False, False, "tensorrt"),  # its .onnx model
    (("torch", "onnxruntime"), False, "auto", True, True, "torch"),  # a CUDA laptop: torch on the GPU
    (("torch", "onnxruntime"), True, "auto", False, True, "onnxruntime"),  # an .onnx file on the GPU
    (("torch", "onnxruntime"), False, "auto", False, True, "onnxruntime"),  # torch built for the CPU
    (("torch", "onnxruntime"), False, "auto", False, False, "onnxruntime"),  # a CPU
    (("torch", "onnxruntime"), False, "cpu", True, True, "onnxruntime"),  # device cpu: no GPU path
    (ALL, False, "cpu", True, True, "onnxruntime"),  # nor TensorRT
    (("torch",), False, "auto", False, False, "torch"),  # no ONNX Runtime installed
])
def test_auto_picks_the_fastest_installed_backend_for_the_device(installed, onnx_only, device, torch_gpu,
                                                                 ort_gpu, want):
    backend, why = choose_backend(installed, onnx_only, device, torch_gpu, ort_gpu)
    assert backend == want and why


@pytest.mark.parametrize("installed,onnx_only,device", [
    (("torch",), True, "auto"),  # an .onnx file and only torch
    ((), False, "auto"),
    (("torch", "onnxruntime"), False, "cuda"),  # cuda asked for, no runtime sees a GPU
])
def test_auto_says_in_one_line_when_nothing_installed_can_run_the_model(installed, onnx_only, device):
    with pytest.raises(BackendUnavailable, match="auto"):
        choose_backend(installed, onnx_only, device, False, False)


def test_auto_on_this_machine_follows_what_is_installed():
    installed = available_backends()
    backend, why = resolve_backend("auto")
    assert backend in installed
    if not nvidia_gpu() and "tensorrt" not in installed and "onnxruntime" in installed:
        assert backend == "onnxruntime" and "CPU" in why  # this project's CI machine
    assert resolve_backend("torch") == ("torch", "requested")


def test_quantized_specs_keep_the_backend_their_quantization_is_for(tiny_dir):
    assert DepthEstimator(tiny_dir + "@int8", backend="auto").backend == "onnxruntime"
    packed = DepthEstimator(tiny_dir + "@hqq4", backend="auto")
    assert packed.backend == "torch" and "quantization" in packed.backend_text  # HQQ saves memory in torch
    assert DepthEstimator(tiny_dir, backend="onnxruntime").backend_text == "onnxruntime"


def test_the_node_tools_and_image_default_to_auto():
    with open(CONFIG) as f:
        assert yaml.safe_load(f)["backend"] == "auto"
    assert bench.build_parser().parse_args([]).backends == ["auto"]
    parser = options.argparse.ArgumentParser()
    options.add_runtime(parser)
    assert parser.parse_args([]).backend == "auto"
    with open(os.path.join(os.path.dirname(PACKAGE_DIR), "..", "Dockerfile")) as f:
        assert "echo auto > /opt/depth_estimation/default_backend" in f.read()


def test_the_node_resolves_auto_once_and_names_it_in_its_diagnostics(tiny_dir, caplog):
    with open(CONFIG) as f:
        raw = yaml.safe_load(f)
    raw.update(model=tiny_dir, input_size=56, expected_frame_size=[64, 48])
    with caplog.at_level("INFO", logger="depth_estimation.runtime.estimator"):
        pipeline, health = start_pipeline(check_params(raw))
    backend, why = resolve_backend("auto")
    estimator = pipeline.estimator
    assert estimator.backend == backend and estimator.requested_backend == "auto"
    assert health.info["backend"] == backend and health.info["backend_requested"] == "auto"
    assert "with backend %s (auto: %s)" % (backend, why) in caplog.text
    if backend != "torch":  # exported on first use and cached, as backend onnxruntime does
        hw = estimator.input_hw(48, 64)
        assert os.path.isfile(estimator.onnx_path(hw))
