"""The 1000 ImageNet-1K class names in index order.

The text file was generated once from torchvision's `_IMAGENET_CATEGORIES` and is shipped
with the package, so exporting never needs torchvision.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

NUM_LABELS = 1000


@cache
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("model_export").joinpath("imagenet_classes.txt").read_text("utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != NUM_LABELS:
        raise RuntimeError(f"imagenet_classes.txt has {len(labels)} names, expected {NUM_LABELS}")
    return labels
