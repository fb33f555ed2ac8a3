"""FLOPs counted from the real network, not a formula.

We report multiply-accumulates (MACs) in billions, which is what the EfficientNet paper and
torchvision call "FLOPs" (B0 ≈ 0.39). torch's FlopCounterMode counts 2 per multiply-add, so
its total is halved. Only convolutions and matrix multiplies are counted (as in the paper);
BatchNorm, activations and SE's elementwise scaling are a small remainder.
"""

from __future__ import annotations

from functools import cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from model_export.model import build_model
from model_export.variants import VARIANTS, Variant


@cache
def _count(name: str, resolution: int) -> float:
    variant = VARIANTS[name]
    # On the meta device nothing is computed or allocated: B7 at 600px costs milliseconds.
    with torch.device("meta"):
        model = build_model(variant)
        image = torch.empty((1, 3, resolution, resolution))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image)
    return counter.get_total_flops() / 2 / 1e9


def count_gmacs(variant: Variant, resolution: int | None = None) -> float:
    """Billions of multiply-adds for one image at `resolution` (default: the table's)."""
    return _count(variant.name, resolution or variant.resolution)
