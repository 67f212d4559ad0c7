"""The FastDepth student fastdepth-mnv3: architecture, shapes, skips, upsampling, folder format."""
import json
import os

import pytest
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depth_estimation.models import fastdepth as fd
from depth_estimation.models.specs import parse_spec
@pytest.fixture(scope="module")
def model():
    return fd.random_student(0)


@pytest.mark.parametrize("b,h,w", [(1, 192, 256), (1, 224, 224), (1, 480, 640), (2, 192, 256)])
def test_output_shape_and_non_negative(model, b, h, w):
    with torch.no_grad():
        y = model(torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h)))
    assert y.shape == (b, h, w)
    assert torch.isfinite(y).all() and (y >= 0).all() and (y > 0).any()
    assert isinstance(model.head[-1], nn.ReLU)


@pytest.mark.parametrize("shape", [(1, 3, 190, 256), (1, 3, 192, 250), (1, 3, 200, 200), (3, 192, 256)])
def test_bad_input_raises(model, shape):
    with pytest.raises(ValueError):
        model(torch.zeros(shape))


def test_the_student_runs_at_its_own_size_in_the_estimator():
    """input_size 0 = the student's own 192 short side, sides rounded to its multiple of 32."""
    from depth_estimation.runtime.estimator import DepthEstimator

    est = DepthEstimator("random:fastdepth-mnv3", input_size=0).load()
    assert est.input_size == 192 and est.input_hw(480, 640) == (192, 256)
    assert est.input_hw(720, 1280) == (192, 352)  # 341.3 -> the nearest multiple of 32
    assert est.infer(np.zeros((480, 640, 3), np.uint8)).shape == (480, 640)


def test_encoder_is_torchvision_mobilenet_v3_large(model):
    enc = model.encoder
    assert sum(p.numel() for p in enc.parameters()) == 2971952
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert sum(1 for _ in enc.parameters()) == 170  # torchvision's features: 170 parameter tensors
    # names and shapes of torchvision's mobilenet_v3_large().features state dict
    known = {
        "features.0.0.weight": (16, 3, 3, 3), "features.0.1.running_var": (16,),
        "features.1.block.0.0.weight": (16, 1, 3, 3),  # block 1: no expansion conv
        "features.1.block.1.0.weight": (16, 16, 1, 1),
        "features.4.block.2.fc1.weight": (24, 72, 1, 1),  # first SE block
        "features.4.block.2.fc1.bias": (24,), "features.4.block.2.fc2.weight": (72, 24, 1, 1),
        "features.4.block.3.0.weight": (40, 72, 1, 1),
        "features.7.block.2.0.weight": (80, 240, 1, 1),  # no SE: block.2 is the projection
        "features.12.block.2.fc1.weight": (168, 672, 1, 1),
        "features.13.block.1.0.weight": (672, 1, 5, 5),
        "features.15.block.2.fc2.weight": (960, 240, 1, 1),
        "features.16.0.weight": (960, 160, 1, 1), "features.16.1.num_batches_tracked": (),
    }
    for k, s in known.items():
        assert shapes.get(k) == s, k
    assert not [k for k in shapes if k.endswith(".0.bias")]  # convs before BN have no bias
    # activations, SE and BatchNorm hyper-parameters
    assert isinstance(enc.features[0][2], nn.Hardswish) and isinstance(enc.features[16][2], nn.Hardswish)
    assert isinstance(enc.features[3].block[0][2], nn.ReLU)
    assert isinstance(enc.features[7].block[0][2], nn.Hardswish)
    se = enc.features[4].block[2]
    assert isinstance(se.activation, nn.ReLU) and isinstance(se.scale_activation, nn.Hardsigmoid)
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    res = [i for i, m in enumerate(enc.features) if getattr(m, "use_res_connect", False)]
    assert res == [1, 3, 5, 6, 8, 9, 10, 12, 14, 15]


def test_encoder_strides_and_skips(model):
    outs = {}
    hooks = [model.encoder.features[i].register_forward_hook(lambda m, inp, out, i=i: outs.__setitem__(i, out))
             for i in (1, 3, 6, 12, 16)]
    try:
        with torch.no_grad():
            bottleneck, skips = model.encode(torch.randn(1, 3, 192, 256))
    finally:
        for h in hooks:
            h.remove()
    # skips: the last block at strides 16, 8, 4, 2 (features.12, .6, .3, .1); bottleneck: features.16
    assert all(a is b for a, b in zip([bottleneck] + skips, [outs[i] for i in (16, 12, 6, 3, 1)]))
    assert bottleneck.shape == (1, 960, 6, 8)
    assert [tuple(s.shape) for s in skips] == [(1, 112, 12, 16), (1, 40, 24, 32), (1, 24, 48, 64),
                                               (1, 16, 96, 128)]


def test_skip_connections_are_used(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 64, 96, generator=g)
    with torch.no_grad():
        assert torch.equal(model(x), model.decode(*model.encode(x))[:, 0])
        bottleneck, skips = model.encode(x)
        skips = [torch.randn(s.shape, generator=g) for s in skips]  # unit scale: random encoders shrink
        ref = model.decode(bottleneck, skips)
        for i in range(len(skips)):
            cut = list(skips)
            cut[i] = torch.zeros_like(cut[i])
            assert (model.decode(bottleneck, cut) - ref).abs().max() > 1e-3, "skip %d unused" % i


def test_decoder_is_nnconv5_with_bilinear_upsampling(model):
    assert len(model.decoder) == 5
    for stage in model.decoder:
        dw, pw, up = stage
        assert dw[0].kernel_size == (5, 5) and dw[0].groups == dw[0].in_channels == dw[0].out_channels
        assert pw[0].kernel_size == (1, 1) and isinstance(pw[2], nn.ReLU)
        assert isinstance(up, nn.Upsample) and up.mode == "bilinear" and up.scale_factor == 2
    assert not any(getattr(m, "mode", None) == "nearest" or isinstance(m, nn.UpsamplingNearest2d)
                   for m in model.modules())
    seen = []

    def check(mod, inp, out):  # functional: the upsampling really is bilinear, not nearest
        x = inp[0]
        bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        nearest = F.interpolate(x, scale_factor=2, mode="nearest")
        assert torch.allclose(out, bilinear, rtol=1e-5, atol=0)  # relative: random-init features are tiny
        assert (out - nearest).abs().max() > 1e-2 * out.abs().max() > 0
        seen.append(out.shape[-2:])

    hooks = [stage[2].register_forward_hook(check) for stage in model.decoder]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert seen == [(4, 4), (8, 8), (16, 16), (32, 32), (64, 64)]


def test_random_student_deterministic():
    state = torch.get_rng_state()
    a, b, c = fd.random_student(3), fd.random_student(3), fd.random_student(4)
    assert torch.equal(torch.get_rng_state(), state)
    assert not a.training
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.features.0.0.weight"], sc["encoder.features.0.0.weight"])


def test_save_load_round_trip(model, tmp_path):
    d = str(tmp_path / "student")
    fd.save_student(model, d)
    assert sorted(os.listdir(d)) == ["config.json", "model.safetensors"]
    assert os.listdir(str(tmp_path)) == ["student"]  # no temp dirs left behind
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "fastdepth-mnv3" and cfg["format_version"] == 1
    assert parse_spec(d).kind == "student_dir"  # what --model reads it as
    loaded = fd.load_student(d)
    assert not loaded.training
    x = torch.randn(2, 3, 192, 256)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    sa, sb = model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_half_folder_stores_half_the_bytes_and_loads_as_float32(model, tmp_path):
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    fd.save_student(model, full)
    fd.save_student(model, half, half=True)
    size = [os.path.getsize(os.path.join(d, "model.safetensors")) for d in (full, half)]
    assert 0.45 < size[1] / size[0] < 0.55
    assert json.load(open(os.path.join(half, "config.json")))["weights_dtype"] == "float16"
    loaded = fd.load_student(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(2, 3, 192, 256)
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    assert 0 < float((out - ref).norm() / ref.norm()) < 1e-2  # rounded weights, same network


def test_save_refuses_overwrite(tmp_path):
    d = str(tmp_path / "student")
    first, second = fd.random_student(1), fd.random_student(2)
    fd.save_student(first, d)
    with pytest.raises(FileExistsError):
        fd.save_student(second, d)
    key = "encoder.features.0.0.weight"
    assert torch.equal(fd.load_student(d).state_dict()[key], first.state_dict()[key])
    fd.save_student(second, d, overwrite=True)
    assert torch.equal(fd.load_student(d).state_dict()[key], second.state_dict()[key])
    assert os.listdir(str(tmp_path)) == ["student"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        fd.save_student(first, str(other))
    assert os.listdir(str(other)) == ["readme.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    fd.save_student(first, str(empty))  # an existing empty folder is fine
    assert parse_spec(str(empty)).kind == "student_dir"


def test_load_errors(model, tmp_path):
    d = tmp_path / "student"
    fd.save_student(model, str(d))
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        fd.load_student(str(d))
    (d / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        fd.load_student(str(d))
    with pytest.raises(FileNotFoundError, match="config.json"):
        fd.load_student(str(tmp_path / "nowhere"))
    e = tmp_path / "other"
    fd.save_student(model, str(e))
    cfg = json.loads((e / "config.json").read_text())
    cfg["model_type"] = "da2-small"
    (e / "config.json").write_text(json.dumps(cfg))
    assert parse_spec(str(e)).kind == "hf_dir"
    with pytest.raises(ValueError, match="model_type"):
        fd.load_student(str(e))
