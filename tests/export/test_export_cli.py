"""The CLI: --labels, --name, the class count from the checkpoint, and every refusal as
exit status 2 with one `error: ` line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from realistic import make_realistic

from model_export.__main__ import main, override_preprocessing, parse_args
from model_export.photos import photo_batch
from model_export.variants import VARIANTS
from model_export.verify import graph_logits, reference_logits
from model_export.weights import load_model

FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def _metadata(path: Path) -> dict:
    model = onnx.load(str(path))
    return json.loads({p.key: p.value for p in model.metadata_props}["efficientnet"])


@pytest.fixture(scope="module")
def flowers_model() -> torch.nn.Module:
    """torchvision's `efficientnet_b0(num_classes=5)`, as fine-tuned (realistic statistics)."""
    torch.manual_seed(5)
    model = torchvision.models.efficientnet_b0(num_classes=5)
    return make_realistic(model, VARIANTS["b0"].default_preprocessing(), seed=6)


@pytest.fixture(scope="module")
def flowers_ckpt(flowers_model, tmp_path_factory) -> Path:
    """Its training checkpoint (DataParallel prefixes) and a 5-line labels file."""
    directory = tmp_path_factory.mktemp("flowers")
    state = {f"module.{k}": v for k, v in flowers_model.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 30}, directory / "ckpt.pth")
    (directory / "labels.txt").write_text("\n".join(FLOWERS) + "\n")
    return directory / "ckpt.pth"


def _refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_labels_and_name_make_a_five_class_graph(flowers_model, flowers_ckpt, tmp_path):
    labels = flowers_ckpt.with_name("labels.txt")
    done = subprocess.run(
        [sys.executable, "-m", "model_export", "--variant", "b0", "--weights",
         str(flowers_ckpt), "--labels", str(labels), "--name", "flowers",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "checkpoint entry 'model_state_dict', 5 classes" in done.stdout
    path = tmp_path / "flowers.onnx"
    meta = _metadata(path)
    assert meta["name"] == "flowers" and meta["labels"] == list(FLOWERS)
    assert meta["weights"]["container"] == "model_state_dict"
    assert meta["architecture"]["num_classes"] == 5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape == ["batch", 5]
    # Against torchvision itself, in float64, at the preprocessing the file states.
    _, info = load_model(VARIANTS["b0"], str(flowers_ckpt))
    images = photo_batch(info.preprocessing)
    expected = reference_logits(flowers_model, info.preprocessing, images)
    got = graph_logits(path, images)
    assert np.abs(expected).max() > 1.0
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_labels_are_required_for_other_class_counts(flowers_ckpt, tmp_path, capsys):
    err = _refused(capsys, ["--variant", "b0", "--weights", str(flowers_ckpt),
                            "--output-dir", str(tmp_path)])  # fmt: skip
    assert "5 classes" in err and "--labels" in err
    assert list(tmp_path.iterdir()) == []


def test_label_count_must_match_the_class_count(flowers_ckpt, tmp_path, capsys):
    four = tmp_path / "four.json"
    four.write_text(json.dumps(list(FLOWERS[:4])))
    err = _refused(capsys, ["--variant", "b0", "--weights", str(flowers_ckpt), "--labels",
                            str(four), "--output-dir", str(tmp_path / "out")])  # fmt: skip
    assert "4 names" in err and "5 classes" in err


def test_a_pickled_model_is_refused(tmp_path, capsys):
    torch.save(torchvision.models.efficientnet_b0(num_classes=2), tmp_path / "whole.pth")
    err = _refused(capsys, ["--variant", "b0", "--weights", str(tmp_path / "whole.pth")])
    assert "model.state_dict()" in err


def test_an_unknown_layout_is_refused(tmp_path, capsys):
    torch.save({"backbone.conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    err = _refused(capsys, ["--variant", "b0", "--weights", str(tmp_path / "other.pth")])
    assert "unknown key layout" in err and "conv_stem.weight" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--variant", "b9"], "unknown variant"),
        (["--variant", "b0", "--name", "../evil"], "--name"),
        (["--weights", "random"], "--variant is required"),
        (["--variant", "b0", "--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        if main(argv) == 2:
            raise SystemExit(2)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_preprocessing_overrides(flowers_ckpt):
    _, info = load_model(VARIANTS["b0"], str(flowers_ckpt))
    assert info.preprocessing_source == "the b0 default"
    args = parse_args(["--variant", "b0", "--resolution", "300", "--crop-pct", "0.9",
                       "--interpolation", "bilinear", "--mean", "0.5", "0.5", "0.5",
                       "--std", "0.25", "0.25", "0.25"])  # fmt: skip
    pre = override_preprocessing(info, args).preprocessing
    assert (pre.resize_size, pre.crop_size, pre.interpolation) == (333, 300, "bilinear")
    assert pre.mean == (0.5,) * 3 and pre.std == (0.25,) * 3
    kept = override_preprocessing(info, parse_args(["--variant", "b0", "--resolution", "448"]))
    assert (kept.preprocessing.resize_size, kept.preprocessing.crop_size) == (512, 448)
    assert "overridden" in kept.preprocessing_source
    assert override_preprocessing(info, parse_args(["--variant", "b0"])) is info
    with pytest.raises(ValueError, match="resize"):
        override_preprocessing(info, parse_args(["--variant", "b0", "--resize", "100"]))


def test_crop_pct_and_resize_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--variant", "b0", "--crop-pct", "0.9", "--resize", "256"])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: ")
