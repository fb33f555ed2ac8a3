"""Our B0..B7 compute exactly what torchvision's EfficientNet computes, in PyTorch and
through the exported ONNX graph, with identical non-trivial weights.

Small 64×64 inputs (the networks are fully convolutional) keep B7 cheap on a CPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from realistic import make_realistic

from model_contract import Preprocessing
from model_export.export import export
from model_export.photos import photo_batch
from model_export.variants import IMAGENET_MEAN, IMAGENET_STD, VARIANTS
from model_export.weights import load_model

SIZE = 64
SMALL = Preprocessing(
    resize_size=SIZE, crop_size=SIZE, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD
)
B_SERIES = [f"b{i}" for i in range(8)]


def _non_trivial_torchvision(name: str) -> torch.nn.Module:
    """torchvision's network with random weights and BN affine params and running
    statistics all away from their defaults (so a mix-up of any of them would show)."""
    torch.manual_seed(7)
    model = getattr(torchvision.models, f"efficientnet_{name}")(weights=None).eval()
    return make_realistic(model, SMALL, seed=8)


@pytest.mark.parametrize("name", B_SERIES)
def test_matches_torchvision_in_pytorch_and_onnx(name, tmp_path):
    torch.set_num_threads(2)
    reference = _non_trivial_torchvision(name)
    stats = [m.running_var for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not torch.allclose(stats[0], torch.ones_like(stats[0]))  # really not defaults

    weights = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), weights)
    ours, info = load_model(VARIANTS[name], str(weights))
    assert info.key_layout == "torchvision" and ours.style.padding == "symmetric"

    images = photo_batch(SMALL)
    x = torch.from_numpy(images).float().div(255)
    x = ((x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        expected = reference(x).numpy()
        got_torch = ours(x).numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(expected).max() > 0.1  # logits are not degenerate
    assert np.abs(got_torch - expected).max() <= 1e-5 * scale

    result = export(ours, dataclasses.replace(info, preprocessing=SMALL), tmp_path / "onnx")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (got_onnx,) = session.run(["logits"], {"image": images})
    assert np.abs(got_onnx - expected).max() <= 1e-4 * scale
    assert (got_onnx.argmax(1) == expected.argmax(1)).all()
