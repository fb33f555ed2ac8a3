"""The verification's parts: the float64 reference is exact, the photos follow the weights'
own transform, and the bound is relative to the logit scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model_contract import Preprocessing
from model_export import verify
from model_export.blocks import SameConv2d
from model_export.photos import photo_batch, photo_paths
from model_export.verify import VerificationError, compare, float64_copy, judge


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
    pre = Preprocessing(
        resize_size=331, crop_size=300, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3
    )
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


def _never() -> float:
    raise AssertionError("PyTorch's float32 error measured though the graph was within the bound")


def test_within_the_bound_nothing_more_is_measured():
    expected = np.array([[12.0, -3.0, 0.5], [1.0, 9.0, 0.0]])
    result = judge(expected, expected + 5e-4, _never)  # 5e-4 / 12 < 1e-4
    assert result.max_rel_error == pytest.approx(5e-4 / 12)
    assert result.float32_rel_error is None and result.top1_agreement == 1.0


def test_a_top1_that_differs_on_a_tie_within_the_bound_is_not_refused():
    """The truth's top two 2e-4 apart, the graph's within 1e-4 x 10: they swap, and either
    answer is right (a fine-tuned model can score an out-of-domain photo nearly evenly)."""
    expected = np.array([[10.0, 9.9998, 0.0], [1.0, 10.0, 2.0]])
    got = expected + np.array([[-2e-4, 2e-4, 0.0], [0.0, 0.0, 0.0]])
    result = judge(expected, got, _never)
    assert result.top1_agreement == 0.5


def test_over_the_bound_but_near_pytorchs_own_float32_error_is_accepted():
    expected = np.array([[10.0, 0.0], [0.0, 10.0]])
    got = expected + 2e-3  # relative 2e-4: over 1e-4
    result = judge(expected, got, lambda: 1e-5)  # float32 itself off by 1e-5: 250x is 2.5e-3
    assert result.float32_rel_error == 1e-5 and result.max_rel_error == pytest.approx(2e-4)
    with pytest.raises(VerificationError, match=r"> 0.0001 and > 250x PyTorch's own float32"):
        judge(expected, got, lambda: 1e-7)  # a network float32 computes well: a wrong graph
    swapped = expected[:, ::-1]
    with pytest.raises(VerificationError, match="top-1 agreement 0%"):
        judge(expected, swapped, lambda: 1e-5)
    assert verify.FLOAT32_SLACK == 250
