"""The PyTorch-eager baseline runs the very network and preprocessing under test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from benchmarks.baseline_torch_app import eval_transform, read_metadata
from benchmarks.torch_model import build_torch_model

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_baseline_rebuilds_the_onnx_weights(lite0_onnx: Path, photos) -> None:
    meta = read_metadata(lite0_onnx)
    model = build_torch_model(meta)
    pre = meta["preprocessing"]
    with Image.open(photos["chelsea"].path) as img:
        x = eval_transform(pre)(img.convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        logits = model(x)[0].numpy()
    assert int(logits.argmax()) in CATS  # the baseline's own transform, real weights

    # Same uint8 pixels into both: logits must match the graph's.
    crop = pre["crop_size"]
    pixels = np.random.default_rng(0).integers(0, 256, (2, crop, crop, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(lite0_onnx), providers=["CPUExecutionProvider"])
    expected = session.run(["logits"], {"image": pixels})[0]
    mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
    nchw = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        got = model((nchw - mean) / std).numpy()
    assert np.abs(got - expected).max() < 1e-3


def test_baseline_rebuilds_seeded_random_weights(b0_random_onnx: Path) -> None:
    meta = read_metadata(b0_random_onnx)
    assert meta["weights"]["source"] == "random"
    model = build_torch_model(meta)
    crop = meta["preprocessing"]["crop_size"]
    pixels = np.full((1, crop, crop, 3), 128, dtype=np.uint8)
    session = ort.InferenceSession(str(b0_random_onnx), providers=["CPUExecutionProvider"])
    expected = session.run(["logits"], {"image": pixels})[0]
    mean = torch.tensor(meta["preprocessing"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["preprocessing"]["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    with torch.inference_mode():
        got = model(x).numpy()
    assert np.abs(got - expected).max() < 1e-3
