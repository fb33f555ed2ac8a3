"""The shared fixtures hand out graphs that honour the contract (docs/onnx-contract.md)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from photos import preprocess


def _metadata(path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}["efficientnet"])


def test_lite0_fixture_is_the_packaged_imagenet_graph(lite0_onnx):
    meta = _metadata(lite0_onnx)
    assert lite0_onnx.name == "efficientnet_lite0.onnx"
    assert meta["variant"] == "lite0" and meta["weights"]["source"] == "imagenet"
    assert meta["weights"]["sha256"].startswith("57934424")
    assert meta["preprocessing"]["mean"] == [0.498] * 3


def test_b0_random_fixture_is_seeded(b0_random_onnx):
    meta = _metadata(b0_random_onnx)
    assert meta["variant"] == "b0"
    assert meta["weights"] == {
        "source": "random",
        "origin": None,
        "sha256": None,
        "key_layout": None,
        "seed": 0,
        "published_top1": None,
        "container": None,
    }


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket", "motorcycle"])
def test_lite0_classifies_real_photos(lite0_onnx, photos, name):
    meta = _metadata(lite0_onnx)
    session = ort.InferenceSession(str(lite0_onnx), providers=["CPUExecutionProvider"])
    pixels = preprocess(photos[name].path, meta["preprocessing"])[None]
    (logits,) = session.run(["logits"], {"image": pixels})
    top1 = int(np.argmax(logits[0]))
    assert top1 in photos[name].expected, f"{name}: top-1 {top1} {meta['labels'][top1]!r}"
