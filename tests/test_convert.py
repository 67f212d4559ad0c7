"""depth_estimation.convert: the authors' Depth-Anything-V2 checkpoints <-> transformers.

All models are tiny and random; the expected original keys and shapes are written out here
from the authors' module structure (github.com/DepthAnything/Depth-Anything-V2:
depth_anything_v2/dpt.py, util/blocks.py, dinov2.py, dinov2_layers/{block,attention,mlp,
layer_scale,patch_embed}.py), independently of convert.py's mapping table.
"""
import os
import pickle

import pytest
import torch

from depth_estimation.models import da2_original as convert
from depth_estimation.models.da2 import make_config
from depth_estimation.models.specs import ARCHS

TINY = dict(hidden=128, layers=4, heads=2, neck=(8, 16, 32, 32), fusion=16)


def authors_keys(hidden, depth, neck, fusion, grid=37):
    """Key -> shape of the authors' ``DepthAnythingV2(encoder, features=fusion, out_channels=neck)``
    state dict (DINOv2 with init_values=1.0 -> LayerScale, no registers, mlp ffn)."""
    d, f = hidden, fusion
    s = {"pretrained.cls_token": (1, 1, d),
         "pretrained.pos_embed": (1, grid * grid + 1, d),
         "pretrained.mask_token": (1, d),
         "pretrained.patch_embed.proj.weight": (d, 3, 14, 14),
         "pretrained.patch_embed.proj.bias": (d,),
         "pretrained.norm.weight": (d,), "pretrained.norm.bias": (d,)}
    for i in range(depth):
        b = "pretrained.blocks.%d." % i
        s.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                  b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
                  b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                  b + "ls1.gamma": (d,), b + "ls2.gamma": (d,),
                  b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                  b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
                  b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,)})
    h = "depth_head."

    def conv(name, out_c, in_c, k, bias=True):
        s[h + name + ".weight"] = (out_c, in_c, k, k)
        if bias:
            s[h + name + ".bias"] = (out_c,)

    for i, c in enumerate(neck):
        conv("projects.%d" % i, c, d, 1)
        conv("scratch.layer%d_rn" % (i + 1), f, c, 3, bias=False)
    # ConvTranspose2d(c, c, 4, stride 4), ConvTranspose2d(c, c, 2, stride 2), Identity, Conv2d(c, c, 3)
    conv("resize_layers.0", neck[0], neck[0], 4)
    conv("resize_layers.1", neck[1], neck[1], 2)
    conv("resize_layers.3", neck[3], neck[3], 3)
    for n in range(1, 5):
        conv("scratch.refinenet%d.out_conv" % n, f, f, 1)
        for unit in ("resConfUnit1", "resConfUnit2"):
            for c in ("conv1", "conv2"):
                conv("scratch.refinenet%d.%s.%s" % (n, unit, c), f, f, 3)
    conv("scratch.output_conv1", f // 2, f, 3)
    conv("scratch.output_conv2.0", 32, f // 2, 3)
    conv("scratch.output_conv2.2", 1, 32, 1)
    return s


def tiny_model(hidden=TINY["hidden"], heads=TINY["heads"], seed=0):
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    cfg = make_config(hidden, TINY["layers"], heads, [1, 2, 3, 4], TINY["neck"], TINY["fusion"])
    model = DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():  # LayerScale and biases start constant: make every tensor distinct
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def depth(model, x):
    with torch.no_grad():
        return model(pixel_values=x).predicted_depth


@pytest.mark.parametrize("hidden,heads,wrapper", [(128, None, None), (32, 2, "model")])
def test_round_trip(tmp_path, hidden, heads, wrapper):
    model = tiny_model(hidden, heads or 2)
    sd = convert.hf_to_original(model)
    path = str(tmp_path / "depth_anything_v2_tiny.pth")
    torch.save({wrapper: sd} if wrapper else sd, path)
    loaded = convert.load_original(path, num_heads=heads)

    assert loaded.config.backbone_config.num_attention_heads == 2
    assert list(loaded.config.backbone_config.out_indices) == [1, 2, 3, 4]
    theirs, ours = model.state_dict(), loaded.state_dict()
    assert set(theirs) == set(ours)
    for k in theirs:
        assert torch.equal(theirs[k], ours[k]), k
    x = torch.randn(1, 3, 56, 70)
    a, b = depth(model, x), depth(loaded, x)
    assert a.shape == b.shape == (1, 56, 70)
    assert torch.allclose(a, b, atol=1e-5)


def _attention(layer):
    """(query, key, value, output) Linear modules of a transformers Dinov2Layer (4.x or 5.x)."""
    att = layer.attention
    if hasattr(att, "q_proj"):
        return att.q_proj, att.k_proj, att.v_proj, att.o_proj
    return att.attention.query, att.attention.key, att.attention.value, att.output.dense


def test_export_has_authors_keys_and_shapes():
    d = TINY["hidden"]
    model = tiny_model()
    sd = convert.hf_to_original(model)

    expected = authors_keys(d, TINY["layers"], TINY["neck"], TINY["fusion"])
    assert set(sd) == set(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert sd["pretrained.blocks.0.attn.qkv.weight"].shape == (3 * d, d)
    assert sd["pretrained.blocks.3.ls1.gamma"].shape == (d,)
    assert sd["depth_head.scratch.refinenet4.out_conv.weight"].shape == (16, 16, 1, 1)
    assert sd["depth_head.scratch.output_conv2.2.weight"].shape == (1, 32, 1, 1)
    assert not any(k.startswith("depth_head.resize_layers.2.") for k in sd)
    assert not any("readout_projects" in k or "register_tokens" in k for k in sd)

    # Values land in the modules with the authors' meaning (reached by attribute, not by key).
    layer = model.backbone.encoder.layer[1]
    q, k, v, o = _attention(layer)
    qkv = sd["pretrained.blocks.1.attn.qkv.weight"]
    assert torch.equal(qkv[:d], q.weight) and torch.equal(qkv[d:2 * d], k.weight)
    assert torch.equal(qkv[2 * d:], v.weight)
    assert torch.equal(sd["pretrained.blocks.1.attn.qkv.bias"][d:2 * d], k.bias)
    assert torch.equal(sd["pretrained.blocks.1.attn.proj.weight"], o.weight)
    assert torch.equal(sd["pretrained.blocks.1.ls2.gamma"], layer.layer_scale2.lambda1)
    assert torch.equal(sd["pretrained.pos_embed"], model.backbone.embeddings.position_embeddings)
    assert torch.equal(sd["pretrained.norm.weight"], model.backbone.layernorm.weight)
    neck = model.neck
    # refinenet4 fuses the deepest features first: transformers' fusion_stage.layers[0]
    for n in range(1, 5):
        fusion = neck.fusion_stage.layers[4 - n]
        pre = "depth_head.scratch.refinenet%d." % n
        assert torch.equal(sd[pre + "out_conv.weight"], fusion.projection.weight), n
        assert torch.equal(sd[pre + "resConfUnit1.conv2.bias"], fusion.residual_layer1.convolution2.bias)
        assert torch.equal(sd[pre + "resConfUnit2.conv1.weight"], fusion.residual_layer2.convolution1.weight)
        assert torch.equal(sd["depth_head.scratch.layer%d_rn.weight" % n], neck.convs[n - 1].weight)
        assert torch.equal(sd["depth_head.projects.%d.bias" % (n - 1)],
                           neck.reassemble_stage.layers[n - 1].projection.bias)
    assert torch.equal(sd["depth_head.resize_layers.3.weight"], neck.reassemble_stage.layers[3].resize.weight)
    assert torch.equal(sd["depth_head.scratch.output_conv2.0.weight"], model.head.conv2.weight)
    assert torch.equal(sd["depth_head.scratch.output_conv2.2.bias"], model.head.conv3.bias)


def test_infers_small_architecture():
    from transformers import DepthAnythingForDepthEstimation

    small = ARCHS["da2-small"]
    shapes = authors_keys(384, 12, (48, 96, 192, 384), 64)
    config, hf = convert.original_to_hf({k: torch.empty(s) for k, s in shapes.items()})
    bb = config.backbone_config
    assert (bb.hidden_size, bb.num_hidden_layers, bb.num_attention_heads) == (384, 12, 6)
    assert list(bb.out_indices) == [3, 6, 9, 12] == list(small.out_indices)
    assert list(config.neck_hidden_sizes) == [48, 96, 192, 384]
    assert config.fusion_hidden_size == 64 and bb.image_size == 518
    n_params = sum(t.numel() for t in hf.values())
    assert 24.7e6 < n_params < 24.9e6, n_params
    model = DepthAnythingForDepthEstimation(config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in hf.items()}
    # the authors' layer choice for 24 blocks (vitl) and quarters for other depths
    assert convert.out_indices_for(24) == [5, 12, 18, 24]
    assert convert.out_indices_for(8) == [2, 4, 6, 8]


def _touch(path):
    open(path, "w").close()


class Payload:
    """Unpickling this calls _touch(path): an arbitrary-code stand-in."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return _touch, (self.path,)


def test_refuses_pickled_objects(tmp_path):
    marker = str(tmp_path / "executed")
    path = str(tmp_path / "evil.pth")
    sd = convert.hf_to_original(tiny_model())
    sd["extra"] = Payload(marker)
    torch.save(sd, path)
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        convert.load_original(path)
    assert not os.path.exists(marker)
    torch.load(path, weights_only=False)  # control: an ordinary unpickle does run the payload
    assert os.path.exists(marker)


@pytest.mark.parametrize("change,key", [
    ("drop", "pretrained.blocks.2.ls2.gamma"),
    ("drop", "depth_head.scratch.refinenet1.resConfUnit1.conv1.bias"),
    ("add", "depth_head.resize_layers.2.weight"),
    ("add", "pretrained.register_tokens"),
])
def test_key_mismatch_names_the_key(tmp_path, change, key):
    sd = convert.hf_to_original(tiny_model())
    if change == "drop":
        del sd[key]
    else:
        sd[key] = torch.zeros(4)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        convert.original_to_hf(sd)
    path = str(tmp_path / "bad.pth")
    torch.save(sd, path)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        convert.load_original(path)
