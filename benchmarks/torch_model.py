"""The PyTorch network behind an .onnx file, rebuilt from the file's own metadata with
model_export's model and weights code, so the eager baseline runs exactly the same weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from model_export.variants import get_variant
from model_export.weights import load_model


def build_torch_model(meta: dict[str, Any]) -> nn.Module:
    """The eval-mode network described by an `efficientnet` metadata object."""
    variant = get_variant(meta["variant"])
    weights = meta["weights"]
    source = weights["source"]
    if source == "random":
        if weights.get("seed") is None:
            raise ValueError("random weights without a recorded seed cannot be rebuilt")
        model, _ = load_model(variant, "random", seed=int(weights["seed"]))
    elif source == "imagenet":
        model, _ = load_model(variant, "imagenet")
    elif source == "file":
        model, _ = load_model(variant, str(weights["origin"]))
    else:
        raise ValueError(f"unknown weights source {source!r} in the model's metadata")
    return model.eval()
