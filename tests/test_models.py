"""Model specs and loading: one name per variant; every source loads, a missing one says how to get it."""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch

from depth_estimation.tools import weights as weights_cmd
from depth_estimation.models import da2
from depth_estimation.models.loading import load_da2
from depth_estimation.models import hub as weights
from depth_estimation.runtime.estimator import DepthEstimator
from depth_estimation.models.specs import ARCHS, ModelNotFound, parse_spec


def test_spec_forms(tmp_path, tiny_dir):
    assert parse_spec("da2-small").hub_id == "depth-anything/Depth-Anything-V2-Small-hf"
    assert parse_spec("random:da2-large").kind == "random" and parse_spec("random:da2-large").untrained
    assert parse_spec(tiny_dir).kind == "hf_dir"
    assert parse_spec("depth-anything/Depth-Anything-V2-Base-hf").arch == "da2-base"
    assert parse_spec("random:fastdepth-mnv3").family == "fastdepth"
    q = parse_spec("random:da2-small@hqq4-dq")
    assert (q.kind, q.arch, q.quant.bits, q.quant.dequantize, q.base) == ("random", "da2-small", 4, True, "random:da2-small")
    assert parse_spec("da2-base@hqq2").quant.dequantize is False
    pth = parse_spec(str(tmp_path / "depth_anything_v2_vitl.pth"))
    assert (pth.kind, pth.arch) == ("original", "da2-large")


@pytest.mark.parametrize("bad", ["", "random:da2-huge", "da2-small@hqq5", "random:fastdepth-mnv3@hqq4", "da2-small@hqq4@hqq8"])
def test_bad_specs_say_what_is_accepted(bad):
    with pytest.raises(ValueError, match="da2-small|Depth-Anything-V2"):
        parse_spec(bad)


def test_missing_path_names_the_file():
    with pytest.raises(ModelNotFound, match="no_such_model_dir"):
        parse_spec("./no_such_model_dir")


@pytest.mark.parametrize("arch, params", [("da2-small", 24.785e6)])
def test_random_arch_matches_paper_size_and_is_announced(arch, params, caplog):
    caplog.set_level(logging.WARNING)
    model = load_da2(parse_spec("random:" + arch))
    assert abs(sum(p.numel() for p in model.parameters()) - params) < 0.01e6
    assert "UNTRAINED" in caplog.text and "RANDOM" in caplog.text


def test_arch_configs_follow_the_reference():
    large = da2.arch_config(ARCHS["da2-large"])
    assert large.backbone_config.hidden_size == 1024 and large.backbone_config.num_hidden_layers == 24
    assert list(large.backbone_config.out_indices) == [5, 12, 18, 24]
    assert list(large.neck_hidden_sizes) == [256, 512, 1024, 1024] and large.fusion_hidden_size == 256


def _tensor(rgb, short_side):
    """The reference input: the frame at its own :func:`input_shape`, normalized."""
    from depth_estimation.runtime import preprocess
    return torch.from_numpy(preprocess.normalize(rgb, *preprocess.input_shape(*rgb.shape[:2], short_side)))


def _same_output(model_a, estimator, rgb):
    out = estimator.infer(rgb)
    from depth_estimation.runtime import preprocess
    with torch.inference_mode():
        ref = model_a(pixel_values=_tensor(rgb, estimator.input_size)).predicted_depth
    ref = preprocess.to_frame_size(ref, *rgb.shape[:2])
    assert np.abs(ref).max() > 0
    # random weights give tiny outputs: compare relative to their scale
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_hf_directory_loads_the_saved_weights(tiny_dir):
    rgb = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    from depth_fixtures import tiny_da2

    est = DepthEstimator(tiny_dir, input_size=56).load()
    _same_output(tiny_da2(seed=0), est, rgb)
    with pytest.raises(AssertionError):  # the check can tell different weights apart
        _same_output(tiny_da2(seed=1), est, rgb)


def test_released_name_loads_from_the_local_cache(hf_cache, tiny_dir):
    """da2-small resolves through the Hugging Face cache layout (models--org--name/snapshots/rev)."""
    repo = hf_cache / "models--depth-anything--Depth-Anything-V2-Small-hf"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_dir, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    assert weights.cached_dir("depth-anything/Depth-Anything-V2-Small-hf") == str(snap)
    est = DepthEstimator("da2-small", input_size=28).load()
    assert est.infer(np.zeros((40, 50, 3), np.uint8)).shape == (40, 50)


def test_missing_weights_stop_with_one_line_that_says_how_to_get_them(hf_cache):
    with pytest.raises(ModelNotFound) as err:
        DepthEstimator("da2-small").load()
    message = str(err.value)
    assert "\n" not in message
    assert "depth-anything/Depth-Anything-V2-Small-hf" in message
    assert "python3 -m depth_estimation.weights fetch da2-small" in message
    assert "random:da2-small" in message


def test_missing_original_checkpoint_names_the_file(tmp_path):
    path = str(tmp_path / "depth_anything_v2_vits.pth")
    with pytest.raises(ModelNotFound, match="depth_anything_v2_vits.pth.*file not found"):
        DepthEstimator(path).load()


def test_pickled_only_folder_is_refused(tmp_path, tiny_dir):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(os.path.join(tiny_dir, "config.json"), folder / "config.json")
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFound, match="safetensors"):
        DepthEstimator(str(folder)).load()


def test_unreadable_weights_are_a_clear_error(tmp_path, tiny_dir):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelNotFound, match="broken"):
        DepthEstimator(str(folder)).load()


def test_weights_cli_where_fails_cleanly_offline(hf_cache, capsys):
    assert weights_cmd.main(["where", "da2-base"]) == 1
    assert "weights fetch da2-base" in capsys.readouterr().err
