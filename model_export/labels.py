"""Class names: ImageNet-1K's (shipped with the package) or the user's own `--labels FILE`.

The text file was generated once from torchvision's `_IMAGENET_CATEGORIES` and is shipped
with the package, so exporting never needs torchvision. Names are never invented: a
checkpoint with another class count needs its own names.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

NUM_LABELS = 1000
MAX_LABEL_CHARS = 200


class LabelsError(ValueError):
    """The labels cannot be used with this checkpoint; the message says why."""


@cache
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("model_export").joinpath("imagenet_classes.txt").read_text("utf-8")
    labels = tuple(line for line in text.splitlines() if line)
    if len(labels) != NUM_LABELS:
        raise RuntimeError(f"imagenet_classes.txt has {len(labels)} names, expected {NUM_LABELS}")
    return labels


def read_labels(path: Path) -> tuple[str, ...]:
    """One name per line (blank lines ignored), or a JSON list of strings."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"cannot read labels file {path} ({exc})") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelsError(f"{path}: not a valid JSON list ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise LabelsError(f"{path}: a JSON labels file must be a list of strings")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    labels = tuple(n.strip() for n in names)
    _check(labels, path)
    return labels


def _check(labels: tuple[str, ...], path: Path) -> None:
    if not labels:
        raise LabelsError(f"{path}: no class names")
    empty = [i for i, n in enumerate(labels) if not n]
    if empty:
        raise LabelsError(f"{path}: empty class name at index {empty[0]}")
    long = [i for i, n in enumerate(labels) if len(n) > MAX_LABEL_CHARS]
    if long:
        raise LabelsError(f"{path}: class name {long[0]} is over {MAX_LABEL_CHARS} characters")
    seen: dict[str, int] = {}
    for i, name in enumerate(labels):
        if name in seen:
            raise LabelsError(f"{path}: duplicate class name {name!r} (indices {seen[name]}, {i})")
        seen[name] = i


def resolve_labels(
    num_classes: int,
    given: tuple[str, ...] | None,
    *,
    source: str = "--labels",
    bundled: tuple[str, ...] | None = None,
) -> tuple[str, ...]:
    """The names to ship: `given` (--labels), else the weights' own, else ImageNet's for
    exactly 1000 classes; anything else is refused."""
    labels = given if given is not None else bundled
    if labels is None:
        if num_classes != NUM_LABELS:
            raise LabelsError(
                f"the checkpoint has {num_classes} classes, not ImageNet's 1000: pass "
                "--labels FILE with their names (one per line, or a JSON list), in index order"
            )
        return imagenet_labels()
    if len(labels) != num_classes:
        what = source if given is not None else "the weights' label_names"
        raise LabelsError(
            f"{what} has {len(labels)} names but the checkpoint's classifier has "
            f"{num_classes} classes"
        )
    return labels
