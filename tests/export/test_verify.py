"""The verification's parts: the float64 reference is exact, the photos follow the weights'
own transform, and the bound is relative to the logit scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model_export.blocks import SameConv2d
from model_export.variants import Preprocessing
from model_export.verify import compare, float64_copy, photo_batch, photo_paths


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(8, 8, 5, 2, padding=2, groups=8, bias=False),
        nn.Conv2d(8, 8, 3, 1, padding=1, groups=8),
        SameConv2d(8, 8, 3, 2, padding=0, groups=8, bias=False),
        nn.Conv2d(8, 16, 3, 1, padding=1),  # not depthwise: left to PyTorch
    ],
)
def test_float64_depthwise_equals_pytorchs_float64_conv(conv):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 17, 16, dtype=torch.float64)
    with torch.inference_mode():
        expected = conv.double()(x)
        got = float64_copy(conv)(x)
    assert got.dtype == torch.float64 and got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-14 * float(expected.abs().max())


def test_photos_ship_small_and_follow_the_preprocessing():
    paths = photo_paths()
    assert len(paths) == 6 and all(p.stat().st_size <= 64 * 1024 for p in paths)
    pre = Preprocessing(331, 300, "bicubic", (0.5,) * 3, (0.5,) * 3)
    batch = photo_batch(pre)
    assert batch.shape == (6, 300, 300, 3) and batch.dtype == np.uint8
    assert len({int(b.mean()) for b in batch}) == 6  # six different photos


def test_the_bound_is_relative_to_the_logit_scale():
    expected = np.array([[200.0, -3.0], [1.0, 150.0]])
    result = compare(expected, expected + 1e-3, 2)
    assert result.max_abs_diff == pytest.approx(1e-3)
    assert result.max_rel_error == pytest.approx(1e-3 / 200)
    assert result.top1_agreement == 1.0
    swapped = compare(expected, expected[:, ::-1], 2)
    assert swapped.top1_agreement == 0.0
