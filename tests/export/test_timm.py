"""Through the CLI, timm's own EfficientNets (built with pretrained=False, realistic
statistics, never downloaded) export and match timm's float64 forward at their
pretrained_cfg preprocessing: efficientnet_b0 (.safetensors), tf_efficientnet_b0 (.pth)
and a Hub-style folder of tf_efficientnet_b3 (crop_pct applied: resize 331 → crop 300)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from realistic import make_realistic
from safetensors.torch import save_file

from model_contract import Preprocessing
from model_export.model import build_model, count_params
from model_export.photos import photo_batch
from model_export.variants import get_architecture
from model_export.verify import float64_copy, graph_logits
from model_export.weights import layouts

ROOT = Path(__file__).resolve().parents[2]
REL_BOUND = 1e-4


def timm_preprocessing(model: torch.nn.Module) -> Preprocessing:
    """timm's eval transform for crop_mode 'center', from the model's pretrained_cfg."""
    cfg = model.pretrained_cfg
    size = cfg["input_size"][1]
    resize = math.floor(size / cfg["crop_pct"])
    return Preprocessing(
        resize_size=resize,
        crop_size=size,
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
    )


def realistic_timm(name: str) -> torch.nn.Module:
    torch.manual_seed(21)
    model = timm.create_model(name, pretrained=False)
    return make_realistic(model, timm_preprocessing(model), seed=22)


def timm_float64(model: torch.nn.Module, pre: Preprocessing, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).double().div(255)
    x = (x - torch.tensor(pre.mean, dtype=torch.float64)) / torch.tensor(pre.std).double()
    with torch.inference_mode():
        exact = float64_copy(model)  # float64 with fast exact depthwise convs
        return np.concatenate([exact(row[None]).numpy() for row in x.permute(0, 3, 1, 2)])


def cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "model_export", *args],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "2"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def metadata(path: Path) -> dict:
    proto = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in proto.metadata_props}["efficientnet"])


def assert_matches_timm(model: torch.nn.Module, graph: Path) -> dict:
    pre = timm_preprocessing(model)
    meta = metadata(graph)
    stated = meta["preprocessing"]
    assert (stated["resize_size"], stated["crop_size"]) == (pre.resize_size, pre.crop_size)
    assert stated["interpolation"] == pre.interpolation
    np.testing.assert_allclose(stated["mean"], pre.mean)
    np.testing.assert_allclose(stated["std"], pre.std)
    images = photo_batch(pre)
    expected = timm_float64(model, pre, images)
    got = graph_logits(graph, images)
    relative = float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))
    print(f"{graph.name}: vs timm float64, max relative error {relative:.2e}")
    assert np.abs(expected).max() > 1.0
    assert relative <= REL_BOUND
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert meta["verification"]["max_rel_error"] <= REL_BOUND
    return meta


def test_timm_efficientnet_b0_safetensors(tmp_path):
    model = realistic_timm("efficientnet_b0")
    weights = tmp_path / "efficientnet_b0.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    cli("--variant", "efficientnet_b0", "--weights", str(weights), "--output-dir", str(tmp_path))
    meta = assert_matches_timm(model, tmp_path / "efficientnet_b0.onnx")
    assert meta["weights"]["key_layout"] == "timm"
    assert meta["architecture"]["timm_name"] == "efficientnet_b0"
    assert (meta["architecture"]["padding"], meta["architecture"]["bn_eps"]) == ("symmetric", 1e-5)


def test_timm_tf_efficientnet_b0_pth(tmp_path):
    model = realistic_timm("tf_efficientnet_b0")
    torch.save(model.state_dict(), tmp_path / "tf_b0.pth")
    cli("--variant", "tf_efficientnet_b0", "--weights", str(tmp_path / "tf_b0.pth"),
        "--name", "tf_b0", "--output-dir", str(tmp_path))  # fmt: skip
    meta = assert_matches_timm(model, tmp_path / "tf_b0.onnx")
    assert (meta["architecture"]["padding"], meta["architecture"]["bn_eps"]) == ("tf_same", 1e-3)


def test_hub_folder_of_tf_efficientnet_b3(tmp_path):
    """timm's own save_for_hf writes the folder: config.json + model.safetensors."""
    model = realistic_timm("tf_efficientnet_b3")
    folder = tmp_path / "tf_efficientnet_b3"
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    done = cli("--weights", str(folder), "--output-dir", str(tmp_path))  # no --variant
    assert "config.json pretrained_cfg" in done.stdout
    meta = assert_matches_timm(model, tmp_path / "efficientnet_b3.onnx")
    assert meta["preprocessing"]["resize_size"] == 331 and meta["preprocessing"]["crop_size"] == 300
    assert meta["weights"]["source"] == "hub" and meta["variant"] == "b3"
    assert meta["architecture"]["timm_name"] == "tf_efficientnet_b3"
    assert len(meta["labels"]) == 1000 and meta["labels"][0] == "tench"


@pytest.mark.parametrize(
    "timm_name", ["tf_efficientnet_b8", "tf_efficientnet_l2", "tf_efficientnet_lite0",
                  "efficientnet_lite4"],
)  # fmt: skip
def test_parameter_counts_and_keys_equal_timms(timm_name):
    """B8/L2 (and the lite names) are timm's architectures: the same parameter count, and
    every tensor of timm's state dict maps onto ours with the same shape (meta device: no
    memory, so L2's 480 M parameters cost nothing)."""
    arch = get_architecture(timm_name)
    with torch.device("meta"):
        ours = build_model(arch.variant)
        theirs = timm.create_model(timm_name)
    assert count_params(ours) == sum(p.numel() for p in theirs.parameters())
    renamed = layouts.rename(theirs.state_dict(), ours, "timm")
    expected = {k: v.shape for k, v in ours.state_dict().items()}
    assert {k: v.shape for k, v in renamed.items()} == expected
