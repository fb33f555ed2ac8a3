"""The three state-dict key layouts in common use, as mapping tables onto our (torchvision)
module names, and a detector that tells them apart from the keys alone.

Our network's module names are torchvision's, so the torchvision layout maps to itself; the
efficientnet_pytorch and timm tables are built by walking the network block by block, so
they hold for every variant and every class count.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from model_export.blocks import ConvBNAct, SqueezeExcitation
from model_export.model import EfficientNet

KeyLayout = Literal["torchvision", "efficientnet_pytorch", "timm"]
BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# One key that only that layout has: the stem convolution's weight.
STEM_KEYS: dict[KeyLayout, str] = {
    "torchvision": "features.0.0.weight",
    "efficientnet_pytorch": "_conv_stem.weight",
    "timm": "conv_stem.weight",
}
# The classifier's weight: its first dimension is the checkpoint's class count.
CLASSIFIER_KEYS: dict[KeyLayout, str] = {
    "torchvision": "classifier.1.weight",
    "efficientnet_pytorch": "_fc.weight",
    "timm": "classifier.weight",
}


class UnknownLayout(ValueError):
    """No known stem key in the state dict."""


def detect_layout(state: Mapping[str, torch.Tensor]) -> KeyLayout:
    for layout, key in STEM_KEYS.items():
        if key in state:
            return layout
    wanted = ", ".join(f"{layout}'s {key!r}" for layout, key in STEM_KEYS.items())
    raise UnknownLayout(f"unknown key layout (none of {wanted}); first keys: {list(state)[:5]}")


def num_classes(state: Mapping[str, torch.Tensor], layout: KeyLayout) -> int | None:
    """The class count the checkpoint's classifier was trained for (None without one)."""
    weight = state.get(CLASSIFIER_KEYS[layout])
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


@dataclass(frozen=True)
class _Part:
    """One conv + BN pair (or an SE layer) of our network, by its torchvision prefix."""

    role: Literal["stem", "expand", "dw", "se", "project", "head"]
    stage: int  # timm's blocks.<stage> / torchvision's features.<stage + 1>
    block: int  # index inside the stage
    index: int  # efficientnet_pytorch's running block number
    ours: str  # e.g. "features.2.0.block.1"


def _parts(model: EfficientNet) -> Iterator[_Part]:
    features = model.features
    yield _Part("stem", -1, 0, 0, "features.0")
    n = 0
    for s in range(1, len(features) - 1):
        for b, block in enumerate(features[s]):
            prefix = f"features.{s}.{b}.block"
            layers = list(block.block)
            convs = [i for i, m in enumerate(layers) if isinstance(m, ConvBNAct)]
            if len(convs) == 3:  # has the 1×1 expansion
                yield _Part("expand", s - 1, b, n, f"{prefix}.{convs[0]}")
            yield _Part("dw", s - 1, b, n, f"{prefix}.{convs[-2]}")
            for i, m in enumerate(layers):
                if isinstance(m, SqueezeExcitation):
                    yield _Part("se", s - 1, b, n, f"{prefix}.{i}")
            yield _Part("project", s - 1, b, n, f"{prefix}.{convs[-1]}")
            n += 1
    yield _Part("head", -1, 0, 0, f"features.{len(features) - 1}")


def _conv_bn(names: dict[str, str], conv: str, bn: str, ours: str) -> None:
    names[f"{conv}.weight"] = f"{ours}.0.weight"
    for p in BN_PARAMS:
        names[f"{bn}.{p}"] = f"{ours}.1.{p}"


def _se(names: dict[str, str], reduce: str, expand: str, ours: str) -> None:
    for theirs, fc in ((reduce, "fc1"), (expand, "fc2")):
        for p in ("weight", "bias"):
            names[f"{theirs}.{p}"] = f"{ours}.{fc}.{p}"


def efficientnet_pytorch_names(model: EfficientNet) -> dict[str, str]:
    """efficientnet_pytorch key → our key, for every tensor of `model`."""
    names: dict[str, str] = {}
    for part in _parts(model):
        ep = f"_blocks.{part.index}"
        if part.role == "stem":
            _conv_bn(names, "_conv_stem", "_bn0", part.ours)
        elif part.role == "head":
            _conv_bn(names, "_conv_head", "_bn1", part.ours)
        elif part.role == "se":
            _se(names, f"{ep}._se_reduce", f"{ep}._se_expand", part.ours)
        else:
            conv, bn = {
                "expand": ("_expand_conv", "_bn0"),
                "dw": ("_depthwise_conv", "_bn1"),
                "project": ("_project_conv", "_bn2"),
            }[part.role]
            _conv_bn(names, f"{ep}.{conv}", f"{ep}.{bn}", part.ours)
    names["_fc.weight"], names["_fc.bias"] = "classifier.1.weight", "classifier.1.bias"
    return names


# timm numbers its BatchNorms in order inside a block, so the names depend on whether the
# block has an expansion: DepthwiseSeparable (ratio 1) vs InvertedResidual.
_TIMM_DS = {"dw": ("conv_dw", "bn1"), "project": ("conv_pw", "bn2")}
_TIMM_IR = {"expand": ("conv_pw", "bn1"), "dw": ("conv_dw", "bn2"), "project": ("conv_pwl", "bn3")}


def timm_names(model: EfficientNet) -> dict[str, str]:
    """timm key → our key (timm's `efficientnet_bN` / `tf_efficientnet_bN` share these)."""
    names: dict[str, str] = {}
    parts = list(_parts(model))
    expanded = {(p.stage, p.block) for p in parts if p.role == "expand"}
    for part in parts:
        timm = f"blocks.{part.stage}.{part.block}"
        if part.role == "stem":
            _conv_bn(names, "conv_stem", "bn1", part.ours)
        elif part.role == "head":
            _conv_bn(names, "conv_head", "bn2", part.ours)
        elif part.role == "se":
            _se(names, f"{timm}.se.conv_reduce", f"{timm}.se.conv_expand", part.ours)
        else:
            table = _TIMM_IR if (part.stage, part.block) in expanded else _TIMM_DS
            conv, bn = table[part.role]
            _conv_bn(names, f"{timm}.{conv}", f"{timm}.{bn}", part.ours)
    names["classifier.weight"] = "classifier.1.weight"
    names["classifier.bias"] = "classifier.1.bias"
    return names


def file_to_ours(model: EfficientNet, layout: KeyLayout) -> dict[str, str]:
    """The mapping table for `layout` (identity for torchvision's)."""
    if layout == "efficientnet_pytorch":
        return efficientnet_pytorch_names(model)
    if layout == "timm":
        return timm_names(model)
    return {k: k for k in model.state_dict()}


def rename(
    state: Mapping[str, torch.Tensor], model: EfficientNet, layout: KeyLayout
) -> dict[str, torch.Tensor]:
    """Our keys for the file's tensors; keys with no counterpart keep their name (and are
    then reported as unexpected by the strict load)."""
    names = file_to_ours(model, layout)
    return {names.get(k, k): v for k, v in state.items()}


def to_layout(
    state: Mapping[str, torch.Tensor], model: EfficientNet, layout: KeyLayout
) -> dict[str, torch.Tensor]:
    """Our state dict written in `layout` (tests build foreign checkpoints with it)."""
    back = {ours: theirs for theirs, ours in file_to_ours(model, layout).items()}
    return {back.get(k, k): v for k, v in state.items()}
