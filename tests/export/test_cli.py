"""The CLI: --labels, --name, the class count from the checkpoint, and every refusal as
exit status 2 with one `error: ` line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

from model_export.__main__ import main

FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def _metadata(path: Path) -> dict:
    model = onnx.load(str(path))
    return json.loads({p.key: p.value for p in model.metadata_props}["efficientnet"])


@pytest.fixture(scope="module")
def flowers_ckpt(tmp_path_factory) -> Path:
    """A torchvision `efficientnet_b0(num_classes=5)` training checkpoint (DataParallel)."""
    directory = tmp_path_factory.mktemp("flowers")
    torch.manual_seed(5)
    model = torchvision.models.efficientnet_b0(num_classes=5)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 30}, directory / "ckpt.pth")
    (directory / "labels.txt").write_text("\n".join(FLOWERS) + "\n")
    return directory / "ckpt.pth"


def _refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_labels_and_name_make_a_five_class_graph(flowers_ckpt, tmp_path):
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
