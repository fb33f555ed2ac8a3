"""From a folder of digits to a served model: the command's report, the file's provenance, and
the real `python -m service` answering with the digit names through `/classify` and `/v2`,
with the numbers of a float64 PyTorch forward of the trained network."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import torch
from digits_run import NAME, PER_CLASS, Trained, train
from live_server import Server, clean_env, running_server
from PIL import Image

from model_contract import METADATA_KEY, ModelMetadata
from model_export.variants import VARIANTS
from model_export.verify import REL_BOUND, logit_scale, reference_logits
from model_export.weights import load_model
from service.pipeline.decode.image import preprocess

pytestmark = pytest.mark.slow  # one training run, one export and one server, shared

DIGITS = [str(d) for d in range(10)]
MAX_PIXELS = 50_000_000


def _metadata(path: Path) -> ModelMetadata:
    proto = onnx.load(str(path), load_external_data=False)
    raw = {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]
    return ModelMetadata.model_validate_json(raw)


@pytest.fixture(scope="module")
def server(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = clean_env(EFFICIENTNET_MODEL_PATH=str(trained.onnx))
    log = tmp_path_factory.mktemp("digits-server") / "server.log"
    with running_server(env, log, "--log-level", "warning") as server:
        yield server


@pytest.fixture(scope="module")
def held_out(trained: Trained) -> list[tuple[Path, str]]:
    """The validation images the report lists (never trained on), with their true class."""
    rows = trained.report()["validation_predictions"]
    return [(Path(r["path"]), r["label"]) for r in rows]


def test_the_report_json(trained: Trained) -> None:
    report = trained.report()
    assert report["classes"] == DIGITS
    assert report["validation_source"] == "split"
    assert report["validation_accuracy"] >= 0.9, report["validation_accuracy"]
    # 40 images per digit, a fifth held out, stratified.
    assert report["train_images_per_class"] == dict.fromkeys(DIGITS, PER_CLASS - 8)
    assert report["validation_images_per_class"] == dict.fromkeys(DIGITS, 8)
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum(1).tolist() == [8] * 10
    assert np.trace(matrix) / matrix.sum() == pytest.approx(report["validation_accuracy"])
    rows = report["validation_predictions"]
    assert len(rows) == 80
    right = sum(r["label"] == r["predicted"] for r in rows)
    assert right / len(rows) == pytest.approx(report["validation_accuracy"])
    for name in DIGITS:
        scores = report["per_class"][name]
        assert scores["support"] == 8
        assert scores["recall"] == pytest.approx(matrix[int(name), int(name)] / 8)
        predicted = matrix[:, int(name)].sum()
        expected = matrix[int(name), int(name)] / predicted if predicted else 0.0
        assert scores["precision"] == pytest.approx(expected)
    curve = report["learning_curve"]["head"]
    best = curve["epochs"][curve["best_epoch"] - 1]
    assert best["validation_accuracy"] == pytest.approx(report["validation_accuracy"], abs=1e-6)
    extract = report["feature_extraction"]
    assert extract["images"] == 400 and extract["images_per_second"] > 0
    assert report["verification"]["top1_agreement"] == 1.0
    assert report["verification_on_validation"]["images"] == 64


def test_unreadable_files_are_skipped_counted_and_listed(trained: Trained) -> None:
    skipped = trained.report()["skipped"]
    assert skipped["count"] == 2
    listed = {
        Path(f["path"]).relative_to(trained.data).as_posix(): f["reason"] for f in skipped["files"]
    }
    assert set(listed) == {"3/notes.txt", "7/broken.png"}
    assert listed["3/notes.txt"].startswith("not an image")
    assert listed["7/broken.png"].startswith("unreadable: ")


def test_the_report_pngs_are_images(trained: Trained) -> None:
    for name in ("confusion_matrix.png", "learning_curve.png"):
        with Image.open(trained.report_dir / name) as image:
            assert image.format == "PNG" and min(image.size) >= 300
            # Not a blank canvas: a chart has many distinct colours.
            assert len(image.convert("RGB").getcolors(1 << 20) or []) > 20


def test_the_file_carries_labels_and_provenance(trained: Trained) -> None:
    meta = _metadata(trained.onnx)
    assert meta.name == NAME and meta.variant == "lite0" and meta.labels == DIGITS
    assert meta.architecture is not None and meta.architecture.num_classes == 10
    assert meta.weights.source == "file" and meta.weights.container == "state_dict"
    training = meta.training
    assert training is not None
    _, published = load_model(VARIANTS["lite0"], "imagenet")
    assert training.base_weights.source == "imagenet"
    assert training.base_weights.sha256 == published.sha256
    assert training.images_per_class == dict.fromkeys(DIGITS, PER_CLASS - 8)
    assert training.validation_images_per_class == dict.fromkeys(DIGITS, 8)
    assert training.validation_accuracy == trained.report()["validation_accuracy"]
    assert training.unfrozen_stages == 0 and training.seed == 0
    assert meta.verification is not None and meta.verification.reference == "pytorch-float64"


def _network(checkpoint: Path) -> torch.nn.Module:
    """The trained network as the exporter's own loader reads the checkpoint back."""
    assert torch.load(checkpoint, weights_only=True)["labels"] == DIGITS
    model, info = load_model(VARIANTS["lite0"], str(checkpoint))
    assert info.num_classes == 10 and info.container == "state_dict"
    return model.eval()


def test_served_answers_equal_the_float64_forward_of_the_trained_network(
    trained: Trained, server: Server, held_out: list[tuple[Path, str]]
) -> None:
    """Every held-out digit through /classify and /v2: the top-1 is the float64 forward's and
    every score is within the exporter's bound of it."""
    meta = httpx.get(f"{server.url}/metadata", timeout=10).json()
    assert meta["name"] == NAME and meta["label_count"] == 10
    assert meta["training"]["validation_accuracy"] == trained.report()["validation_accuracy"]
    pre = _metadata(trained.onnx).preprocessing
    pixels = np.stack([preprocess(p.read_bytes(), pre, MAX_PIXELS) for p, _ in held_out])
    logits = reference_logits(_network(trained.checkpoint), pre, pixels)
    expected = torch.softmax(torch.from_numpy(logits), 1).numpy()
    # Probabilities move less than the logits do, so the logits' bound also bounds them.
    bound = REL_BOUND * logit_scale(logits)

    served = np.concatenate(
        [_infer(server, [p for p, _ in held_out[i : i + 20]]) for i in range(0, len(held_out), 20)]
    )
    np.testing.assert_allclose(served, expected, atol=bound, rtol=0)
    assert served.argmax(1).tolist() == expected.argmax(1).tolist()

    report = {Path(r["path"]): r["predicted"] for r in trained.report()["validation_predictions"]}
    right = 0
    for (path, label), row in zip(held_out, expected, strict=True):
        response = httpx.post(
            f"{server.url}/classify",
            params={"top_k": 10},
            files={"file": (path.name, path.read_bytes(), "image/png")},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert sorted(p["label"] for p in predictions) == DIGITS
        top = predictions[0]["label"]
        assert top == DIGITS[int(row.argmax())] == report[path]
        scores = np.zeros(10)
        for p in predictions:
            scores[int(p["label"])] = p["score"]
        np.testing.assert_allclose(scores, row, atol=bound, rtol=0)
        right += top == label
    assert right / len(held_out) == trained.report()["validation_accuracy"]


def _infer(server: Server, paths: list[Path]) -> np.ndarray:
    """`POST /v2/models/<name>/infer` with the files, base64 in JSON: the probabilities."""
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    tensor = {"name": "encoded_image", "shape": [len(paths)], "datatype": "BYTES"}
    body = {"inputs": [{**tensor, "data": encoded}], "outputs": [{"name": "probabilities"}]}
    response = httpx.post(f"{server.url}/v2/models/{NAME}/infer", json=body, timeout=120)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [len(paths), 10]
    return np.asarray(output["data"], dtype=np.float64).reshape(len(paths), 10)


def test_the_same_seed_trains_the_same_head_from_the_cached_features(
    trained: Trained, features_cache: Path, tmp_path: Path
) -> None:
    again = tmp_path / "models"
    done = train(
        "--data", str(trained.data), "--name", NAME, "--output-dir", str(again),
        "--cache-dir", str(features_cache), "--seed", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((again / f"{NAME}-report" / "report.json").read_text())
    assert report["feature_extraction"]["cached"] is True
    assert report["validation_accuracy"] == trained.report()["validation_accuracy"]
    first = _network(trained.checkpoint).state_dict()
    second = _network(again / f"{NAME}.pth").state_dict()
    for key in ("classifier.1.weight", "classifier.1.bias"):
        assert torch.equal(first[key], second[key]), key


def test_unfreeze_fine_tunes_the_last_stage_and_keeps_the_better_weights(
    trained: Trained, features_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    done = train(
        "--data", str(trained.data), "--name", "tuned", "--output-dir", str(out),
        "--cache-dir", str(features_cache), "--unfreeze", "1", "--finetune-epochs", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert "fine-tune 1" in done.stderr  # its progress bar
    meta = _metadata(out / "tuned.onnx")
    assert meta.training is not None and meta.training.unfrozen_stages == 1
    report = json.loads((out / "tuned-report" / "report.json").read_text())
    assert set(report["learning_curve"]) == {"head", "fine-tune"}
    curve = report["learning_curve"]["fine-tune"]
    # Epoch 0 is where it started: the head's kept epoch, the same as the frozen run's.
    assert [e["epoch"] for e in curve["epochs"]] == [0, 1]
    start = curve["epochs"][0]["validation_accuracy"]
    assert start == pytest.approx(trained.report()["validation_accuracy"], abs=1e-6)
    assert report["validation_accuracy"] >= start - 1e-6  # never worse than the head alone
    # Only the final 1x1 convolution and the classifier may move, and they moved exactly when
    # the fine-tuned epoch was kept.
    base = _network(trained.checkpoint).state_dict()
    tuned = _network(out / "tuned.pth").state_dict()
    last = f"features.{len(VARIANTS['lite0'].stages()) + 1}."
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert all(k.startswith((last, "classifier.")) for k in changed), changed
    assert bool(changed) == (curve["best_epoch"] == 1), (changed, curve["best_epoch"])
