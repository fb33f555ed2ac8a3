"""Checkpoint containers, wrapper prefixes, file types, class counts and key layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from model_export.model import build_model
from model_export.variants import VARIANTS
from model_export.weights import WeightsError, layouts, load_model
from model_export.weights.checkpoints import CheckpointError, read_checkpoint

B0 = VARIANTS["b0"]


@pytest.fixture(scope="module")
def five_class_state() -> dict[str, torch.Tensor]:
    """torchvision's own B0 built for a 5-class fine-tune (random init, no download)."""
    torch.manual_seed(11)
    model = torchvision.models.efficientnet_b0(num_classes=5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("container", "prefix"),
    [
        (None, ""),
        ("state_dict", "module."),
        ("model", "model."),
        ("model_state_dict", "model.module."),
        ("state_dict_ema", ""),
    ],
)
def test_containers_and_prefixes(five_class_state, tmp_path, container, prefix):
    state = {f"{prefix}{k}": v for k, v in five_class_state.items()}
    obj = state if container is None else {container: state, "epoch": 7, "optimizer": {}}
    torch.save(obj, tmp_path / "ckpt.pt")
    model, info = load_model(B0, str(tmp_path / "ckpt.pt"))
    assert _same(model, five_class_state)
    assert (info.container, info.num_classes) == (container, 5)
    assert model.classifier[1].out_features == 5


def test_ema_weights_are_taken_over_the_raw_ones(five_class_state, tmp_path):
    """timm's loader evaluates the EMA weights when a checkpoint has both; so do we."""
    raw = {k: torch.zeros_like(v) for k, v in five_class_state.items()}
    torch.save({"state_dict": raw, "state_dict_ema": five_class_state}, tmp_path / "t.pth")
    model, info = load_model(B0, str(tmp_path / "t.pth"))
    assert info.container == "state_dict_ema" and _same(model, five_class_state)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors"])
def test_every_file_type(five_class_state, tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in five_class_state.items()}, str(path))
    else:
        torch.save(five_class_state, path)
    model, info = load_model(B0, str(path))
    assert _same(model, five_class_state) and info.num_classes == 5


def test_a_pickled_model_is_refused_with_how_to_save_its_state_dict(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(torchvision.models.efficientnet_b0(num_classes=3), path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "whole pickled model" in message and "model.state_dict()" in message
    assert "\n" not in message


@pytest.mark.parametrize("layout", ["efficientnet_pytorch", "timm"])
def test_mapping_tables_cover_every_tensor_once(layout):
    for name in ("b0", "b3", "lite0", "b8"):
        with torch.device("meta"):
            model = build_model(VARIANTS[name], num_classes=7)
        table = layouts.file_to_ours(model, layout)
        ours = set(model.state_dict())
        assert set(table.values()) == ours and len(table) == len(ours), name


def test_layout_detection_and_class_count(five_class_state):
    assert layouts.detect_layout(five_class_state) == "torchvision"
    assert layouts.num_classes(five_class_state, "torchvision") == 5
    with torch.device("meta"):
        model = build_model(B0, num_classes=5)
    for layout in ("efficientnet_pytorch", "timm"):
        renamed = layouts.to_layout(five_class_state, model, layout)
        assert layouts.detect_layout(renamed) == layout
        assert layouts.num_classes(renamed, layout) == 5
    with pytest.raises(layouts.UnknownLayout, match="unknown key layout"):
        layouts.detect_layout({"backbone.stem.weight": torch.zeros(1)})


def test_timm_layout_needs_the_family(five_class_state, tmp_path: Path):
    """timm's two families share one key layout: the keys cannot say which padding."""
    with torch.device("meta"):
        model = build_model(B0, num_classes=5)
    torch.save(layouts.to_layout(five_class_state, model, "timm"), tmp_path / "t.pth")
    with pytest.raises(WeightsError, match="tf_efficientnet_b0"):
        load_model(B0, str(tmp_path / "t.pth"))


def test_a_one_class_classifier_is_refused(five_class_state, tmp_path):
    state = {**five_class_state}
    state["classifier.1.weight"] = state["classifier.1.weight"][:1]
    state["classifier.1.bias"] = state["classifier.1.bias"][:1]
    torch.save(state, tmp_path / "one.pth")
    with pytest.raises(WeightsError, match="at least 2"):
        load_model(B0, str(tmp_path / "one.pth"))
