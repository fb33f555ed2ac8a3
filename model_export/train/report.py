"""The training report: what a person looks at (a confusion matrix and a learning curve, as
PNG images) and what a program reads (one JSON: validation accuracy, per-class precision and
recall, the confusion matrix, the data seen and skipped, the timings).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, and no GUI toolkit is imported

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from model_export.train.data import Skipped
from model_export.train.head import History

REPORT_JSON = "report.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVE_PNG = "learning_curve.png"


@dataclass(frozen=True)
class Scores:
    accuracy: float
    per_class: dict[str, dict[str, float]]  # precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted


def score(classes: Sequence[str], truth: np.ndarray, predicted: np.ndarray) -> Scores:
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=indices, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    matrix = confusion_matrix(truth, predicted, labels=indices)
    return Scores(float(accuracy_score(truth, predicted)), per_class, matrix.tolist())


def plot_confusion(path: Path, classes: Sequence[str], scores: Scores) -> None:
    side = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side), dpi=100)
    try:
        ConfusionMatrixDisplay(np.asarray(scores.confusion), display_labels=list(classes)).plot(
            ax=ax, cmap="Blues", colorbar=True, xticks_rotation=45 if len(classes) > 6 else 0
        )
        ax.set_title(f"Validation: accuracy {scores.accuracy:.1%}")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def plot_curve(path: Path, phases: Sequence[tuple[str, History]]) -> None:
    """Loss and accuracy per epoch, training and validation, each phase's kept epoch marked."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    try:
        offset = 0
        for name, history in phases:
            x = [offset + e.epoch for e in history.epochs]
            # Markers: a phase of one or two epochs would otherwise be an invisible line.
            style = {"marker": "o", "markersize": 3}
            for ax, what in ((loss_ax, "loss"), (acc_ax, "accuracy")):
                ax.plot(
                    x,
                    [getattr(e, f"train_{what}") for e in history.epochs],
                    **style,
                    label=f"{name}: train",
                )
                ax.plot(
                    x,
                    [getattr(e, f"validation_{what}") for e in history.epochs],
                    **style,
                    label=f"{name}: val",
                )
            best = history.best_epoch
            acc_ax.axvline(offset + best.epoch, color="grey", linestyle=":", linewidth=1)
            offset = x[-1] if x else offset
        loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
        acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (dotted: kept epoch)")
        acc_ax.set_ylim(0, 1.02)
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def write(
    directory: Path,
    classes: Sequence[str],
    scores: Scores,
    phases: Sequence[tuple[str, History]],
    skipped: Sequence[Skipped],
    extra: dict[str, Any],
) -> Path:
    """The two PNGs and the JSON in `directory`; returns the JSON's path."""
    directory.mkdir(parents=True, exist_ok=True)
    plot_confusion(directory / CONFUSION_PNG, classes, scores)
    plot_curve(directory / CURVE_PNG, phases)
    document = {
        **extra,
        "classes": list(classes),
        "validation_accuracy": scores.accuracy,
        "per_class": scores.per_class,
        "confusion_matrix": scores.confusion,
        "learning_curve": {
            name: {
                "best_epoch": history.best_epoch.epoch,
                "epochs": [asdict(e) for e in history.epochs],
            }
            for name, history in phases
        },
        "skipped": {
            "count": len(skipped),
            "files": [{"path": str(s.path), "reason": s.reason} for s in skipped],
        },
        "images": {"confusion_matrix": CONFUSION_PNG, "learning_curve": CURVE_PNG},
    }
    path = directory / REPORT_JSON
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
