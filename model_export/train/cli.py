"""`python -m model_export train --data photos/ --variant lite0 --name parts --output-dir models`:
a folder of labelled photos to a checkpoint, a verified `.onnx` the service serves with its own
class names, and a report.

The order is the cheapest refusal first: the folders' structure is checked before torch loads a
network, the images' readability before any training.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_contract import Preprocessing, TrainingInfo, VerificationInfo
from model_export.export import ExportError, ExportResult, check_name, export
from model_export.labels import LabelsError
from model_export.model import EfficientNet, Preprocessed
from model_export.train import data, features, finetune, head, report
from model_export.train.checkpoint import save_checkpoint, trained_weights
from model_export.train.data import DataError, Folder, Sample, Skipped, ValidationSource
from model_export.train.features import Features
from model_export.usage import OneLineParser, refuse
from model_export.variants import VARIANTS, get_architecture
from model_export.verify import (
    VerificationError,
    float32_rel_error,
    graph_logits,
    judge,
    reference_logits,
)
from model_export.weights import LoadedWeights, WeightsError, load_model

# The graph is checked against the float64 forward on up to this many validation images too:
# the float64 reference runs one image at a time (~0.2 s each for Lite0 on 2 cores).
GRAPH_CHECK_IMAGES = 64


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = OneLineParser(
        prog="efficientnet-export train",
        description="Train a classifier for your own classes on a folder of labelled photos "
        "(one sub-folder per class), starting from a variant's ImageNet weights, and export it "
        "as a verified graph the service serves with those class names.",
    )
    p.add_argument("--data", type=Path, required=True, help="folder with one sub-folder per class")
    p.add_argument(
        "--val-data",
        type=Path,
        help="a validation folder with the same class sub-folders (default: a stratified, "
        f"seeded {data.VALIDATION_FRACTION:.0%}% of --data)",  # %% for argparse
    )
    p.add_argument("--variant", default="lite0", help=f"{', '.join(VARIANTS)} (default lite0)")
    p.add_argument(
        "--weights",
        default="imagenet",
        help="what to start from: 'imagenet' (the variant's published weights; offline for "
        "lite0-lite2) or any checkpoint the exporter accepts (a file, a Hub folder, hf-hub:)",
    )
    p.add_argument(
        "--name",
        help="the model's name: NAME.onnx, NAME.pth, NAME-report/ (default: --data's folder name)",
    )
    p.add_argument("--output-dir", type=Path, default=Path("models"))
    p.add_argument("--seed", type=int, default=0, help="the split, the head's init and order")
    p.add_argument("--epochs", type=int, default=200, help="most epochs for the head (200)")
    p.add_argument(
        "--patience", type=int, default=20, help="stop after this many epochs without a better "
        "validation accuracy (20)",
    )  # fmt: skip
    p.add_argument(
        "--unfreeze",
        type=int,
        default=0,
        metavar="N",
        help="also train the backbone's last N stages (the final 1x1 convolution counts as "
        "one) on augmented images, after the head (default 0: the backbone stays frozen)",
    )
    p.add_argument(
        "--finetune-epochs", type=int, default=10, help="most epochs with --unfreeze (10)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="where computed features are kept (default OUTPUT_DIR/.cache); weights "
        "downloads use $EFFICIENTNET_WEIGHTS_CACHE as in the export",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = p.parse_args(argv)
    for option in ("epochs", "patience", "finetune_epochs"):
        if getattr(args, option) < 1:
            p.error(f"--{option.replace('_', '-')} must be at least 1")
    try:
        args.architecture = get_architecture(args.variant)
    except ValueError as exc:
        p.error(str(exc))
    # `features` holds the stem, one module per stage and the final 1x1 convolution.
    modules = len(args.architecture.variant.stages()) + 2
    if not 0 <= args.unfreeze <= modules:
        p.error(
            f"--unfreeze {args.unfreeze}: from 0 to {modules} ({args.variant}: the stem, "
            f"{modules - 2} stages, the final 1x1 convolution)"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is usable here")
    return args


@dataclass(frozen=True)
class Outcome:
    result: ExportResult
    checkpoint: Path
    report: Path
    accuracy: float
    validation_images: int


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        outcome = run(args)
    except (DataError, WeightsError, ExportError, LabelsError, VerificationError) as exc:
        return refuse(exc)
    print(
        f"validation accuracy {outcome.accuracy:.1%} on {outcome.validation_images} images; "
        f"graph verified ({outcome.result.verification.max_rel_error:.2g} relative error)"
    )
    print(f"wrote {outcome.result.path}, {outcome.checkpoint}, {outcome.report}")
    print(f"serve it: EFFICIENTNET_MODEL_PATH={outcome.result.path} make serve")
    return 0


@dataclass(frozen=True)
class Datasets:
    """The features to train and validate on, and what it took to compute them."""

    classes: tuple[str, ...]
    train: Features
    validation: Features
    source: ValidationSource
    skipped: tuple[Skipped, ...]
    extraction: dict[str, Any]  # images, seconds, images/s, device, threads, cached


def run(args: argparse.Namespace) -> Outcome:
    start = time.perf_counter()
    name = check_name(args.name or args.data.resolve().name)
    train_folder = data.scan(args.data, "--data")
    data.check_classes(train_folder, "--data", minimum=2)
    val_folder = None
    if args.val_data is not None:
        val_folder = data.scan(args.val_data, "--val-data")
        data.check_same_classes(train_folder, val_folder)
    device = features.pick_device() if args.device == "auto" else torch.device(args.device)
    torch.manual_seed(args.seed)
    model, base = load_model(args.architecture, args.weights)
    pre = base.preprocessing
    sets = _datasets(args, model, base, train_folder, val_folder, device)
    val = sets.validation
    val_pixels = _pixels(val, pre)
    phases = _train(args, model, pre, sets, val_pixels, device)
    model = model.cpu().eval()
    predicted = _predict(model, pre, val_pixels)
    scores = report.score(sets.classes, val.labels, predicted)
    training = TrainingInfo(
        base_weights=base.as_metadata(),
        images_per_class=data_counts(sets.classes, sets.train.labels),
        validation_images_per_class=data_counts(sets.classes, val.labels),
        validation_source=sets.source,
        validation_accuracy=scores.accuracy,
        unfrozen_stages=args.unfreeze,
        epochs=sum(e.epoch > 0 for _, h in phases for e in h.epochs),
        seed=args.seed,
    )
    layout = base.key_layout or "torchvision"
    checkpoint = args.output_dir / f"{name}.pth"
    save_checkpoint(checkpoint, model, layout, args.variant, sets.classes, pre, training)
    info = trained_weights(base, checkpoint, layout, sets.classes)
    result = export(model, info, args.output_dir, name=name, labels=sets.classes, training=training)
    on_validation = _check_graph(model, pre, result.path, val_pixels[:GRAPH_CHECK_IMAGES])
    report_path = report.write(
        args.output_dir / f"{name}-report",
        sets.classes,
        scores,
        phases,
        sets.skipped,
        {
            "model": str(result.path),
            "checkpoint": str(checkpoint),
            "variant": args.architecture.variant.name,
            "base_weights": training.base_weights.model_dump(mode="json"),
            "data": str(args.data),
            "validation_source": sets.source,
            "train_images_per_class": training.images_per_class,
            "validation_images_per_class": training.validation_images_per_class,
            "unfrozen_stages": args.unfreeze,
            "seed": args.seed,
            "feature_extraction": sets.extraction,
            "verification": result.verification.model_dump(mode="json"),
            "verification_on_validation": on_validation.model_dump(mode="json"),
            # Every held-out image with its answer: the mistakes are the ones to look at.
            "validation_predictions": [
                {"path": str(path), "label": sets.classes[truth], "predicted": sets.classes[guess]}
                for path, truth, guess in zip(val.paths, val.labels, predicted, strict=True)
            ],
            "seconds": time.perf_counter() - start,
        },
    )
    return Outcome(result, checkpoint, report_path, scores.accuracy, len(val.labels))


def _datasets(
    args: argparse.Namespace,
    model: EfficientNet,
    base: LoadedWeights,
    train_folder: Folder,
    val_folder: Folder | None,
    device: torch.device,
) -> Datasets:
    """Features of every readable image, split (or the validation folder's), checked again
    now that the unreadable files are known."""
    pre = base.preprocessing
    cache = args.cache_dir or args.output_dir / ".cache"
    weights_id = base.sha256 or f"{base.source}:{base.origin}:{base.seed}"
    classes = train_folder.classes
    found = _features(cache, weights_id, model, pre, train_folder, device, "features")
    source: ValidationSource
    if val_folder is None:
        data.check_readable(classes, found.labels, len(found.skipped), "--data", minimum=2)
        rows, held = data.split_indices(found.labels, len(classes), args.seed)
        train, val, source = _rows(found, rows), _rows(found, held), "split"
        extracted = [found]
    else:
        data.check_readable(classes, found.labels, len(found.skipped), "--data", minimum=1)
        val = _features(cache, weights_id, model, pre, val_folder, device, "validation features")
        data.check_readable(classes, val.labels, len(val.skipped), "--val-data", minimum=1)
        train, source = found, "folder"
        extracted = [found, val]
    images = sum(len(f.paths) for f in extracted)
    seconds = sum(f.seconds for f in extracted)
    extraction = {
        "images": images,
        "seconds": seconds,
        "images_per_second": images / seconds if seconds else None,
        "cached": all(f.cached for f in extracted),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    skipped = tuple(s for f in extracted for s in f.skipped)
    return Datasets(classes, train, val, source, skipped, extraction)


def _train(
    args: argparse.Namespace,
    model: EfficientNet,
    pre: Preprocessing,
    sets: Datasets,
    val_pixels: np.ndarray,
    device: torch.device,
) -> list[tuple[str, head.History]]:
    """The new head on the cached features; then, with --unfreeze, the last stages too."""
    train, val = sets.train, sets.validation
    classifier, history = head.train_head(
        train.vectors,
        train.labels,
        val.vectors,
        val.labels,
        len(sets.classes),
        head.Stopping(args.epochs, args.patience),
        args.seed,
    )
    model.classifier[1] = classifier
    phases = [("head", history)]
    if args.unfreeze:
        samples = [Sample(p, int(y)) for p, y in zip(train.paths, train.labels, strict=True)]
        # A quarter of the head's patience: each fine-tuning epoch costs a full pass.
        stopping = head.Stopping(args.finetune_epochs, max(1, args.patience // 4))
        tuned = finetune.finetune(
            model,
            pre,
            args.unfreeze,
            samples,
            val_pixels,
            val.labels,
            stopping,
            args.seed,
            device,
            start=history.best_epoch,
        )
        phases.append(("fine-tune", tuned))
    return phases


def _features(
    cache: Path,
    weights_id: str,
    model: EfficientNet,
    pre: Preprocessing,
    folder: Folder,
    device: torch.device,
    what: str,
) -> Features:
    key = features.cache_key(weights_id, pre, folder.samples)
    return features.cached_extract(cache, key, model, pre, folder.samples, device, what=what)


def _rows(found: Features, rows: np.ndarray) -> Features:
    return dataclasses.replace(
        found,
        vectors=found.vectors[rows],
        labels=found.labels[rows],
        paths=tuple(found.paths[i] for i in rows),
        skipped=(),
    )


def _pixels(found: Features, pre: Preprocessing) -> np.ndarray:
    """The validation images as the service feeds them (they decoded once, so they decode)."""
    rows = [data.read_pixels(Sample(p, 0), pre) for p in found.paths]
    bad = [r for r in rows if isinstance(r, Skipped)]
    if bad:
        raise DataError(f"{bad[0].path}: changed while training ({bad[0].reason})")
    return np.stack(rows)  # type: ignore[arg-type]


def _predict(model: EfficientNet, pre: Preprocessing, pixels: np.ndarray) -> np.ndarray:
    """Top-1 of the trained network (float32, as trained) on service-preprocessed pixels."""
    net = Preprocessed(model, pre.mean, pre.std).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), features.BATCH_SIZE):
            out.append(net(torch.from_numpy(pixels[i : i + features.BATCH_SIZE])).argmax(1))
    return torch.cat(out).numpy()


def data_counts(classes: Sequence[str], labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(classes))
    return {name: int(counts[i]) for i, name in enumerate(classes)}


def _check_graph(
    model: EfficientNet, pre: Preprocessing, path: Path, pixels: np.ndarray
) -> VerificationInfo:
    """The written graph against the float64 forward on the user's own validation images, with
    the export's bound; a graph that fails is removed."""
    expected = reference_logits(model, pre, pixels)
    got = graph_logits(path, pixels)
    try:
        checked = judge(expected, got, lambda: float32_rel_error(model, pre, pixels, expected))
    except VerificationError as exc:
        path.unlink(missing_ok=True)
        raise VerificationError(f"{path.name} on validation images: {exc}; file removed") from None
    return checked.model_copy(update={"inputs": f"{len(pixels)} validation images"})
