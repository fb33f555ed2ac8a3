"""Building blocks: conv-BN-activation, squeeze-and-excitation, MBConv.

Module names and nesting mirror torchvision's EfficientNet so that its state dicts load
as they are (`features.N.M.block.K...`); the efficientnet_pytorch and timm layouts are mapped
onto these names in weights/layouts.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from model_export.variants import SE_RATIO, Activation

Padding = Literal["symmetric", "tf_same"]


@dataclass(frozen=True)
class ConvStyle:
    """How convolutions pad and how BatchNorm normalizes: the two places where
    TensorFlow-trained weights differ from torchvision's."""

    padding: Padding = "symmetric"
    bn_eps: float = 1e-5
    activation: Activation = "silu"

    def act(self) -> nn.Module:
        return nn.SiLU(inplace=True) if self.activation == "silu" else nn.ReLU6(inplace=True)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: output = ceil(input / stride), with the odd
    pixel of padding on the bottom/right. For stride 2 on even inputs this is asymmetric,
    which symmetric padding cannot reproduce."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = _same_pad(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        pad_w = _same_pad(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _same_pad(size: int, kernel: int, stride: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + kernel - size, 0)


def conv(cin: int, cout: int, kernel: int, stride: int, groups: int, style: ConvStyle):
    # At stride 1 with an odd kernel TF's SAME is symmetric; only stride 2 needs SameConv2d.
    if style.padding == "tf_same" and stride > 1:
        return SameConv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
    pad = (kernel - 1) // 2
    return nn.Conv2d(cin, cout, kernel, stride, padding=pad, groups=groups, bias=False)


class ConvBNAct(nn.Sequential):
    """conv → BN → activation (indices 0, 1, 2 as torchvision's Conv2dNormActivation)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        style: ConvStyle,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            conv(cin, cout, kernel, stride, groups, style),
            nn.BatchNorm2d(cout, eps=style.bn_eps),
        ]
        if activation:
            layers.append(style.act())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int, style: ConvStyle) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = style.act()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp16 graphs keep this layer in fp32 (export._half_copy): pooling a large map in
        # half precision overflows. The casts exist only when the dtypes differ.
        dtype = self.fc1.weight.dtype
        pooled = self.avgpool(x if x.dtype == dtype else x.to(dtype))
        s = self.scale_activation(self.fc2(self.activation(self.fc1(pooled))))
        return x * (s if s.dtype == x.dtype else s.to(x.dtype))


class StochasticDepth(nn.Module):
    """Drops the whole residual branch per sample while training; identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep).div_(keep)


@dataclass(frozen=True)
class BlockSpec:
    cin: int
    cout: int
    expand_ratio: int
    kernel: int
    stride: int
    se: bool
    drop_path: float


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand (unless ratio 1) → depthwise k×k → SE → linear 1×1
    projection, plus the input when the shape is unchanged."""

    def __init__(self, spec: BlockSpec, style: ConvStyle) -> None:
        super().__init__()
        self.use_res_connect = spec.stride == 1 and spec.cin == spec.cout
        hidden = spec.cin * spec.expand_ratio
        layers: list[nn.Module] = []
        if hidden != spec.cin:
            layers.append(ConvBNAct(spec.cin, hidden, 1, style))
        layers.append(ConvBNAct(hidden, hidden, spec.kernel, style, spec.stride, groups=hidden))
        if spec.se:
            layers.append(SqueezeExcitation(hidden, max(1, int(spec.cin * SE_RATIO)), style))
        layers.append(ConvBNAct(hidden, spec.cout, 1, style, activation=False))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(spec.drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out
