"""Model files with other class counts, names and variants, made from a real exported graph.

The service must serve any class count and name a file declares; the end-to-end proof with a
fine-tuned checkpoint through the real exporter is tests/interfaces/test_custom_model.py. Here,
for fast in-process tests, the packaged ImageNet Lite0 graph gets a real linear head on top of
its logits: class j's logit is the mean of the ImageNet logits of its group, so each photo has a
class a human would call right (chelsea → "cat"), and a label shifted by one index is caught.
Only the ``onnx`` package is used (no torch in the test process).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

METADATA_KEY = "efficientnet"
OUTPUT = "logits"

# ImageNet indices per class; the same sets tests/photos.py accepts for each photo.
THREE_CLASSES: dict[str, tuple[int, ...]] = {
    "cat": (281, 282, 285),
    "coffee": (967, 968, 504),
    "rocket": (657, 744, 812),
}
PHOTO_CLASS = {"chelsea": "cat", "coffee": "coffee", "rocket": "rocket"}


def metadata_of(model: onnx.ModelProto) -> dict[str, Any]:
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise AssertionError(f"no {METADATA_KEY!r} metadata")


def _set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = json.dumps(metadata)
            return
    raise AssertionError(f"no {METADATA_KEY!r} metadata")


def _grouped_head(model: onnx.ModelProto, groups: Sequence[Sequence[int]]) -> None:
    """Replace the output ``logits [N, 1000]`` by ``logits [N, len(groups)]`` (group means)."""
    graph = model.graph
    width = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    for node in graph.node:
        node.output[:] = ["imagenet_logits" if o == OUTPUT else o for o in node.output]
    weights = np.zeros((width, len(groups)), dtype=np.float32)
    for j, indices in enumerate(groups):
        weights[list(indices), j] = 1.0 / len(indices)
    graph.initializer.append(numpy_helper.from_array(weights, "group_head"))
    graph.node.append(helper.make_node("MatMul", ["imagenet_logits", "group_head"], [OUTPUT]))
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = len(groups)


def derive(
    source: Path,
    target: Path,
    *,
    classes: Mapping[str, Sequence[int]] | None = None,
    metadata: Mapping[str, Any] | None = None,
    drop: Sequence[str] = (),
) -> Path:
    """A copy of ``source`` with a grouped head (``classes``: label → ImageNet indices, in index
    order), metadata fields replaced (``metadata``) or removed (``drop``); written to ``target``."""
    model = onnx.load(source)
    meta = metadata_of(model)
    if classes is not None:
        _grouped_head(model, list(classes.values()))
        meta["labels"] = list(classes)
    meta.update(metadata or {})
    for key in drop:
        meta.pop(key, None)
    _set_metadata(model, meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, target)
    return target
