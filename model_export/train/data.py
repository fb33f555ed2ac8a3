"""The labelled photos: a folder with one sub-folder per class (the folder name is the label,
torchvision's ImageFolder convention), an optional validation folder, else a seeded stratified
split; every refusal a user can fix is a `DataError` whose message is one line.

Images are read with the service's own pixel rules, shared through model_contract/pixels.py (the
exporter never imports the service): the formats it decodes, EXIF rotation, every mode to RGB
(alpha over white, 16-bit scaled), the resize and center crop of the weights' preprocessing. So
the pixels trained on are the pixels the service feeds the graph; the one difference is that the
service may decode a large JPEG at a reduced size first (draft mode), within 1/255 of a full
decode. A file that cannot be read is skipped and listed with the reason, never dropped silently.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model_contract import Preprocessing
from model_contract.pixels import FORMATS, to_model_input, to_rgb

# With a split, a fifth of each class is held out (at least one image, at least one kept).
VALIDATION_FRACTION = 0.2

ValidationSource = Literal["folder", "split"]
T = TypeVar("T")


class DataError(ValueError):
    """The data cannot be trained on; the message (one line) says why and what to change."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into the classes


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass(frozen=True)
class Folder:
    """One folder's classes (sorted folder names) and its files, in a stable order."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]

    def counts(self) -> dict[str, int]:
        return count_per_class(self.classes, self.samples)


def count_per_class(classes: Sequence[str], samples: Iterable[Sample]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for sample in samples:
        counts[classes[sample.label]] += 1
    return counts


def scan(root: Path, option: str) -> Folder:
    """The classes and files under `root` (`option` names it in errors: --data, --val-data).

    Hidden files and folders are left out (.DS_Store, .ipynb_checkpoints); files in nested
    folders count for their class, as in ImageFolder."""
    if not root.is_dir():
        raise DataError(f"{option} {root}: no such folder")
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and _visible(d.name)))
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and _visible_under(p))
        samples += [Sample(path, label) for path in files]
    if not samples:
        raise DataError(
            f"{option} {root}: empty; put each class's images in a sub-folder named for the "
            "class (photos/cat/1.jpg, photos/dog/2.jpg)"
        )
    return Folder(root, classes, tuple(samples))


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _visible_under(path: Path) -> bool:
    return all(_visible(part) for part in path.parts[-2:]) and _visible(path.name)


def check_classes(folder: Folder, option: str, minimum: int) -> None:
    """At least two classes, each with at least `minimum` files."""
    counts = folder.counts()
    if len(folder.classes) < 2:
        only = folder.classes[0] if folder.classes else "none"
        raise DataError(
            f"{option} {folder.root}: a single class ({only}); a classifier needs at least 2 "
            "class sub-folders"
        )
    few = [name for name, n in counts.items() if n < minimum]
    if few:
        listed = ", ".join(f"{name} ({counts[name]})" for name in few)
        raise DataError(
            f"{option} {folder.root}: classes with fewer than {minimum} images: {listed}; "
            f"each class needs at least {minimum}"
        )


def check_same_classes(train: Folder, validation: Folder) -> None:
    if train.classes == validation.classes:
        return
    missing = sorted(set(train.classes) - set(validation.classes))
    extra = sorted(set(validation.classes) - set(train.classes))
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if extra:
        parts.append(f"not in --data: {', '.join(extra)}")
    raise DataError(
        f"--val-data {validation.root}: its classes differ from --data's ({'; '.join(parts)})"
    )


def check_readable(
    classes: Sequence[str], labels: np.ndarray, skipped: int, option: str, minimum: int
) -> None:
    """After decoding: each class still has `minimum` images the service can read."""
    counts = np.bincount(labels, minlength=len(classes))
    few = [f"{classes[i]} ({n})" for i, n in enumerate(counts) if n < minimum]
    if few:
        raise DataError(
            f"{option}: classes with fewer than {minimum} readable images: {', '.join(few)} "
            f"({skipped} files skipped as unreadable or not images)"
        )


def split_indices(labels: np.ndarray, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split of rows: VALIDATION_FRACTION of each class held out (at least one
    image, and at least one kept for training), chosen by `seed`; (train rows, held-out rows)."""
    rng = random.Random(seed)
    train: list[int] = []
    held: list[int] = []
    for label in range(classes):
        members = [int(i) for i in np.flatnonzero(labels == label)]
        rng.shuffle(members)
        n = min(len(members) - 1, max(1, round(len(members) * VALIDATION_FRACTION)))
        held += members[:n]
        train += members[n:]
    return np.asarray(sorted(train), dtype=np.int64), np.asarray(sorted(held), dtype=np.int64)


def open_upright(path: Path) -> Image.Image:
    """The decoded image, EXIF-rotated, in its own mode; raises what Pillow raises."""
    with warnings.catch_warnings():
        # Pillow's decompression-bomb error still refuses absurd canvases; its warning for
        # large photos would only interleave with the progress bar.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path, formats=FORMATS)
        image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return image


def read_rgb(path: Path) -> Image.Image | Skipped:
    """The upright RGB image (for augmentation), or why it cannot be read."""
    return _read(path, to_rgb)


def read_pixels(sample: Sample, pre: Preprocessing) -> np.ndarray | Skipped:
    """uint8 HWC model input as the service computes it, or why the file cannot be read."""
    return _read(sample.path, lambda image: to_model_input(image, pre))


def _read(path: Path, convert: Callable[[Image.Image], T]) -> T | Skipped:
    try:
        return convert(open_upright(path))
    except UnidentifiedImageError:
        return Skipped(path, f"not an image, or not one of {', '.join(FORMATS)}")
    except Exception as exc:  # Pillow reports bad data as OSError, SyntaxError, ValueError...
        return Skipped(path, f"unreadable: {str(exc) or type(exc).__name__}")
