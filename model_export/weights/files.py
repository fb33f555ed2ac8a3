"""A weights file into the network: read its state dict, tell its key layout, pick the
convolution style the weights were trained with, and load it all-or-nothing.

Keys and shapes are compared before anything is copied; any mismatch raises `WeightsError`
listing the first differences, and names the variant the file does fit when there is one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from model_export.blocks import ConvStyle
from model_export.model import EfficientNet, build_model
from model_export.variants import NUM_CLASSES, VARIANTS, Architecture, Variant
from model_export.weights.checkpoints import CheckpointError, read_checkpoint
from model_export.weights.layouts import (
    KeyLayout,
    UnknownLayout,
    detect_layout,
    file_to_ours,
    num_classes,
    rename,
)
from model_export.weights.loaded import LoadedWeights, Source, WeightsError

MAX_LISTED = 10
TORCH_BN_EPS = 1e-5  # PyTorch's BatchNorm default (timm's non-tf_ models)
# BatchNorm's step counter does not affect inference; files may omit it.
OPTIONAL_SUFFIX = ".num_batches_tracked"
# TensorFlow-trained weights (the efficientnet_pytorch layout) need TF's padding and BN eps.
TF_STYLE = {"padding": "tf_same", "bn_eps": 1e-3}


def from_file(
    arch: Architecture, path: Path, source: Source, origin: str
) -> tuple[EfficientNet, LoadedWeights]:
    try:
        checkpoint = read_checkpoint(path)
        layout = detect_layout(checkpoint.state)
    except (CheckpointError, UnknownLayout) as exc:
        raise WeightsError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    variant = arch.variant
    classes = num_classes(checkpoint.state, layout) or NUM_CLASSES
    if classes < 2:
        raise WeightsError(f"{path}: the classifier has {classes} output; at least 2 are needed")
    model = build_model(variant, conv_style(arch, layout, path), classes)
    load_strict(model, checkpoint.state, variant, layout)
    info = LoadedWeights(
        source=source,
        origin=origin,
        sha256=sha256_file(path),
        key_layout=layout,
        seed=None,
        published_top1=None,
        preprocessing=variant.default_preprocessing(),
        container=checkpoint.container,
        num_classes=classes,
        timm_name=arch.timm_name,
    )
    return model, info


def conv_style(arch: Architecture, layout: KeyLayout, path: Path) -> ConvStyle:
    """Padding and BN eps: from the timm name when given, else what the layout implies."""
    act = arch.variant.activation
    if arch.tf_trained is True or (arch.tf_trained is None and layout == "efficientnet_pytorch"):
        return ConvStyle(**TF_STYLE, activation=act)  # type: ignore[arg-type]
    if arch.tf_trained is False:
        return ConvStyle(bn_eps=TORCH_BN_EPS, activation=act)
    if layout == "timm":
        name = arch.variant.name
        raise WeightsError(
            f"{path}: timm layout, whose keys do not say how the weights were trained: pass "
            f"--variant efficientnet_{name} (PyTorch-trained) or --variant tf_efficientnet_{name}"
            " (ported from TensorFlow), as the checkpoint's timm architecture name says"
        )
    return ConvStyle(bn_eps=arch.variant.bn_eps, activation=act)


def mismatches(
    model: nn.Module, state: Mapping[str, torch.Tensor], display: Mapping[str, str] | None = None
) -> list[str]:
    """Human-readable differences between `state` and what `model` expects; `display` maps
    our names back to the file's own names for the message."""
    show = (lambda k: display.get(k, k)) if display else (lambda k: k)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out = [
        f"missing {show(k)}" for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)
    ]
    out += [f"unexpected {show(k)}" for k in state if k not in expected]
    out += [
        f"shape {show(k)}: file {tuple(v.shape)} vs model {expected[k]}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    return out


def load_strict(
    model: EfficientNet, raw: Mapping[str, torch.Tensor], variant: Variant, layout: KeyLayout
) -> None:
    """Copy `raw` (in `layout`) into `model`, or raise listing the first mismatches."""
    state = rename(raw, model, layout)
    display = None
    if layout != "torchvision":
        display = {ours: theirs for theirs, ours in file_to_ours(model, layout).items()}
    problems = mismatches(model, state, display)
    if problems:
        classes = model.classifier[1].out_features
        guess = guess_variant(raw, layout, classes, exclude=variant.name)
        hint = f"; the file matches variant {guess!r}: pass --variant {guess}" if guess else ""
        listed = "; ".join(problems[:MAX_LISTED])
        raise WeightsError(
            f"weights do not fit efficientnet-{variant.name} ({layout} layout): "
            f"{len(problems)} mismatches, first {min(len(problems), MAX_LISTED)}: {listed}"
            f"{hint}"
        )
    # strict=False only for the optional BN counters; everything else was checked above.
    model.load_state_dict(state, strict=False)


def guess_variant(
    raw: Mapping[str, torch.Tensor], layout: KeyLayout, classes: int, exclude: str
) -> str | None:
    """The first other variant whose every key and shape the file fits, if any."""
    for name, other in VARIANTS.items():
        if name == exclude:
            continue
        with torch.device("meta"):  # shapes only: cheap even for b7
            candidate = build_model(other, num_classes=classes)
        if not mismatches(candidate, rename(raw, candidate, layout)):
            return name
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
