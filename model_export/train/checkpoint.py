"""The trained network as a checkpoint the exporter itself reloads, and what the exported file's
`weights` record says about it (the weights training started from go in `training`)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from model_contract import Preprocessing, TrainingInfo
from model_export.model import EfficientNet
from model_export.weights import LoadedWeights
from model_export.weights.layouts import KeyLayout, to_layout


def save_checkpoint(
    path: Path,
    model: EfficientNet,
    layout: KeyLayout,
    variant: str,
    classes: Sequence[str],
    pre: Preprocessing,
    training: TrainingInfo,
) -> None:
    """A checkpoint the exporter itself accepts (`--variant VARIANT --weights NAME.pth
    --labels ...`), with its labels, preprocessing and provenance beside the state dict.

    The state dict is written in the key layout of the weights training started from: the
    exporter infers the convolution style (padding, BatchNorm eps) from the layout, so Lite's
    TF-trained weights saved in torchvision's keys would be reloaded as PyTorch-style."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": to_layout(model.state_dict(), model, layout),
            "variant": variant,
            "labels": list(classes),
            "preprocessing": pre.model_dump(mode="json"),
            "training": training.model_dump(mode="json"),
        },
        path,
    )


def trained_weights(
    base: LoadedWeights, checkpoint: Path, layout: KeyLayout, classes: Sequence[str]
) -> LoadedWeights:
    """What the file's `weights` says: the trained checkpoint (the base is in `training`)."""
    return dataclasses.replace(
        base,
        source="file",
        origin=str(checkpoint.resolve()),
        sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        key_layout=layout,
        container="state_dict",
        seed=None,
        published_top1=None,
        num_classes=len(classes),
        labels=tuple(classes),
    )
