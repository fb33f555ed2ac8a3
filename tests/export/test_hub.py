"""Hugging Face Hub folders (timm's config.json) and hf-hub: downloads, without the Hub:
folders are written by timm's own save_for_hf; an unreachable endpoint stands in for
being offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from model_export.labels import LabelsError, resolve_labels
from model_export.variants import VARIANTS, get_architecture
from model_export.weights import WeightsError, load_model

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens
NAMES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def three_class_folder(tmp_path_factory) -> Path:
    """A fine-tuned timm efficientnet_b0 with its class names, as the Hub stores it."""
    torch.manual_seed(1)
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=3)
    folder = tmp_path_factory.mktemp("hub") / "me--pets"
    timm.models.save_for_hf(model, str(folder), model_config={"label_names": NAMES})
    assert (folder / "pytorch_model.bin").is_file()  # timm's non-safetensors default
    return folder


def test_folder_gives_variant_classes_labels_and_preprocessing(three_class_folder):
    model, info = load_model(None, str(three_class_folder))
    assert model.variant.name == "b0" and info.timm_name == "efficientnet_b0"
    assert (info.source, info.key_layout, info.num_classes) == ("hub", "timm", 3)
    assert info.labels == tuple(NAMES)
    assert resolve_labels(info.num_classes, None, bundled=info.labels) == tuple(NAMES)
    pre = info.preprocessing
    assert (pre.resize_size, pre.crop_size, pre.interpolation) == (256, 224, "bicubic")
    assert model.style.padding == "symmetric"


def test_hf_hub_reference_uses_the_cached_download(three_class_folder, tmp_path):
    """A file downloaded once is never fetched again (the endpoint is unreachable here)."""
    cache = tmp_path / "cache"
    cached = cache / "hub" / "me--pets"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(three_class_folder, target_is_directory=True)
    _, info = load_model(None, "hf-hub:me/pets", cache_dir=cache)
    assert info.origin == "hf-hub:me/pets" and info.labels == tuple(NAMES)


def test_variant_disagreeing_with_the_config_is_refused(three_class_folder):
    with pytest.raises(WeightsError, match=r"config\.json says efficientnet_b0"):
        load_model(get_architecture("tf_efficientnet_b0"), str(three_class_folder))
    with pytest.raises(WeightsError, match=r"config\.json says"):
        load_model(VARIANTS["b3"], str(three_class_folder))


def test_given_labels_must_still_match(three_class_folder):
    _, info = load_model(None, str(three_class_folder))
    with pytest.raises(LabelsError, match="2 names"):
        resolve_labels(info.num_classes, ("a", "b"), bundled=info.labels)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"config\.json"):
        load_model(None, str(tmp_path))


def test_unreachable_hub_exits_2_with_one_line_saying_where_to_put_the_files(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": UNREACHABLE}
    done = subprocess.run(
        [sys.executable, "-m", "model_export", "--weights", "hf-hub:timm/tf_efficientnet_b7",
         "--cache-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    err = done.stderr
    assert "hf-hub:timm/tf_efficientnet_b7" in err and "config.json" in err
    assert str(tmp_path / "hub" / "timm--tf_efficientnet_b7") in err and "--weights" in err
    assert not (tmp_path / "out").exists()
