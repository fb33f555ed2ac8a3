"""Every variant built from the one baseline table has the reference parameter count."""

from __future__ import annotations

import pytest
import torch

from model_export.model import build_model, count_params
from model_export.variants import VARIANTS, get_variant, round_channels, round_repeats
from model_export.weights.checkpoints import read_checkpoint
from model_export.weights.published import packaged_file

# torchvision's EfficientNet-B0..B7 (the parameter counts its documentation states).
REFERENCE_PARAMS = {
    "b0": 5_288_548,
    "b1": 7_794_184,
    "b2": 9_109_994,
    "b3": 12_233_232,
    "b4": 19_341_616,
    "b5": 30_389_784,
    "b6": 43_040_704,
    "b7": 66_347_960,
}


def _params(name: str) -> int:
    with torch.device("meta"):  # shapes only: b7 costs nothing
        return count_params(build_model(VARIANTS[name]))


@pytest.mark.parametrize("name", REFERENCE_PARAMS)
def test_parameter_count_matches_reference(name):
    assert _params(name) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2"])
def test_lite_parameter_count_matches_published_file(name):
    """No published figure to copy: count the tensors of the packaged weights instead."""
    published = VARIANTS[name].imagenet
    state = read_checkpoint(packaged_file(published)).state
    file_params = sum(
        v.numel() for k, v in state.items() if "running_" not in k and "num_" not in k
    )
    assert _params(name) == file_params


def test_lite_differs_from_b_series_as_specified():
    lite, b = VARIANTS["lite4"], VARIANTS["b4"]
    assert (lite.stem_channels(), lite.head_channels()) == (32, 1280)  # not scaled
    assert (b.stem_channels(), b.head_channels()) == (48, 1792)
    assert lite.stages()[0].repeats == 1 and lite.stages()[-1].repeats == 1
    assert [s.repeats for s in b.stages()] == [2, 4, 4, 6, 6, 8, 2]
    model = build_model(lite)
    assert not any(type(m).__name__ == "SqueezeExcitation" for m in model.modules())
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())


def test_channel_rounding_rules():
    assert round_channels(32, 1.1) == 32  # 35.2 → 32 (≥ 90% of 35.2)
    assert round_channels(16, 1.1) == 16  # 17.6 → 16
    assert round_channels(40, 1.4) == 56
    assert round_channels(1280, 1.8) == 2304
    assert round_repeats(3, 1.1) == 4  # always rounded up
    assert round_repeats(1, 3.1) == 4


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of: b0, b1"):
        get_variant("b9")
