"""FastDepth student ``fastdepth-mnv3`` (REFERENCE.md section 4).

FastDepth (Wofk et al., ICRA 2019) with its encoder swapped for MobileNetV3-Large:

* ``encoder``: exactly torchvision's ``mobilenet_v3_large().features`` (same module and
  parameter names, so a torchvision ImageNet ``features`` state dict loads with
  ``strict=True``); 2,971,952 parameters, output 960 channels at stride 32.
* ``decoder``: NNConv5, 5 stages of [5x5 depthwise conv+BN+ReLU, 1x1 pointwise conv+BN+ReLU,
  x2 bilinear upsampling], each followed by an additive skip from the encoder at the same
  resolution. Skips are the last block at each stride: ``features.12`` (112 ch, /16),
  ``features.6`` (40 ch, /8), ``features.3`` (24 ch, /4), ``features.1`` (16 ch, /2); the
  decoder widths are therefore 960 -> 112 -> 40 -> 24 -> 16 -> 32 (the adds need equal
  widths; the last stage has no skip and keeps FastDepth's 32). Then a 1x1 conv to one
  channel + ReLU: non-negative relative inverse depth, like the Depth-Anything-V2 teacher.

Input: RGB normalized with the ImageNet mean/std (:mod:`.preprocess`), H and W multiples
of 32 (256x192 for a 4:3 frame). A student is stored as a folder with ``config.json`` and
``model.safetensors`` (:func:`save_student` / :func:`load_student`).
"""
from __future__ import annotations

import json
import os
from typing import List, Tuple

import torch
from torch import Tensor, nn
from safetensors.torch import load_file

from depth_estimation.io.atomic import write_model_folder

MODEL_TYPE = "fastdepth-mnv3"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# torchvision's mobilenet_v3_large bneck table: kernel, expanded, out, SE, hardswish, stride
MNV3_LARGE = (
    (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1),
)
SKIP_INDICES = (12, 6, 3, 1)  # encoder.features outputs added in decoder stages 1..4
DECODER_WIDTHS = (112, 40, 24, 16, 32)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU,
                 eps: float = 1e-3, momentum: float = 0.01) -> nn.Sequential:
    """torchvision's Conv2dNormActivation layout: ``0`` conv (no bias), ``1`` BN, ``2`` act."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps, momentum=momentum)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation as used by MobileNetV3 (ReLU, then Hardsigmoid)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: List[nn.Module] = []
        if exp != cin:
            layers.append(_conv_bn_act(cin, exp, 1, act=act))
        layers.append(_conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcitation(exp, _make_divisible(exp // 4, 8)))
        layers.append(_conv_bn_act(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3LargeEncoder(nn.Module):
    """``features`` of torchvision's ``mobilenet_v3_large`` (module names included)."""

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = [_conv_bn_act(3, 16, 3, 2, act=nn.Hardswish)]
        cin = 16
        for k, exp, cout, se, hs, stride in MNV3_LARGE:
            layers.append(InvertedResidual(cin, k, exp, cout, se, hs, stride))
            cin = cout
        layers.append(_conv_bn_act(cin, 6 * cin, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.out_channels = 6 * cin


class FastDepthMNV3(nn.Module):
    """FastDepth with a MobileNetV3-Large encoder: ``[B,3,H,W]`` -> ``[B,H,W]`` (H, W % 32 == 0)."""

    multiple = 32
    default_input_size = 192  # short side: 256x192 for a 4:3 frame
    model_type = MODEL_TYPE

    def __init__(self):
        super().__init__()
        self.encoder = MobileNetV3LargeEncoder()
        stages, cin = [], self.encoder.out_channels
        for cout in DECODER_WIDTHS:
            stages.append(nn.Sequential(
                _conv_bn_act(cin, cin, 5, groups=cin, eps=1e-5, momentum=0.1),
                _conv_bn_act(cin, cout, 1, eps=1e-5, momentum=0.1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)))
            cin = cout
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Sequential(nn.Conv2d(cin, 1, 1), nn.ReLU())
        for m in self.modules():  # torchvision's MobileNetV3 init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Bottleneck (960 ch, /32) and the skips in decoder order (/16, /8, /4, /2)."""
        feats = {}
        for i, layer in enumerate(self.encoder.features):
            x = layer(x)
            if i in SKIP_INDICES:
                feats[i] = x
        return x, [feats[i] for i in SKIP_INDICES]

    def decode(self, x: Tensor, skips: List[Tensor]) -> Tensor:
        """Decoder + head: ``[B,1,H,W]``."""
        for i, stage in enumerate(self.decoder):
            x = stage(x)
            if i < len(skips):
                x = x + skips[i]
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError("expected a [B,3,H,W] tensor, got shape %s" % (tuple(x.shape),))
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError("input height and width must be multiples of %d, got %dx%d (HxW)"
                             % (self.multiple, h, w))
        return self.decode(*self.encode(x))[:, 0]


def random_student(seed: int = 0) -> FastDepthMNV3:
    """A randomly initialized student (deterministic for a seed; global RNG untouched), eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FastDepthMNV3()
    return model.eval()


def _config() -> dict:
    return {
        "model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
        "encoder": "mobilenet_v3_large", "skip_indices": list(SKIP_INDICES),
        "decoder": "nnconv5-bilinear", "decoder_widths": list(DECODER_WIDTHS),
        "multiple": FastDepthMNV3.multiple, "default_input_size": FastDepthMNV3.default_input_size,
        "input": "RGB, ImageNet mean/std normalized",
        "output": "relative inverse depth (non-negative)",
    }


def save_student(model: FastDepthMNV3, directory: str, overwrite: bool = False, half: bool = False) -> str:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` atomically; returns it.
    ``half``: floating-point tensors stored as float16 (half the bytes; loaded back as float32)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config = dict(_config(), weights_dtype="float16" if half else "float32")
    return write_model_folder(directory, state, WEIGHTS_NAME, CONFIG_NAME, config, overwrite=overwrite)


def _read_config(directory: str) -> dict:
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError("student config missing: %s" % path)
    with open(path) as f:
        return json.load(f)


def load_student(directory: str, device: str = "cpu") -> FastDepthMNV3:
    """Load a student folder written by :func:`save_student` (eval mode)."""
    cfg = _read_config(directory)
    if cfg.get("model_type") != MODEL_TYPE:
        raise ValueError("%s: model_type %r is not %r" % (directory, cfg.get("model_type"), MODEL_TYPE))
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError("%s: unsupported format_version %r" % (directory, cfg.get("format_version")))
    weights = os.path.join(directory, WEIGHTS_NAME)
    if not os.path.isfile(weights):
        raise FileNotFoundError("student weights missing: %s" % weights)
    model = FastDepthMNV3()
    model.load_state_dict(load_file(weights, device=str(device)), strict=True)  # float16 files: cast up
    return model.to(device).eval()
