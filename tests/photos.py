"""Real photographs from scikit-image's data folder, with their acceptable ImageNet classes,
and the reference eval transform (resize shorter side → center crop) driven by the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image


@dataclass(frozen=True)
class Photo:
    path: Path  # a JPEG file
    expected: frozenset[int]  # ImageNet-1K indices acceptable as top-1


# Expected sets are what a human would accept as correct, not what a model happened to say.
PHOTOS: dict[str, tuple[Callable[[], np.ndarray], frozenset[int]]] = {
    # tabby, tiger cat, Egyptian cat
    "chelsea": (skimage.data.chelsea, frozenset({281, 282, 285})),
    # espresso, cup, coffee mug
    "coffee": (skimage.data.coffee, frozenset({967, 968, 504})),
    # missile, projectile, space shuttle
    "rocket": (skimage.data.rocket, frozenset({657, 744, 812})),
    # moped, motor scooter (ImageNet has no "motorcycle"), its disk brake, crash helmet
    "motorcycle": (
        lambda: skimage.data.stereo_motorcycle()[0],
        frozenset({665, 670, 535, 518}),
    ),
}


def write_photos(directory: Path) -> dict[str, Photo]:
    directory.mkdir(parents=True, exist_ok=True)
    photos = {}
    for name, (load, expected) in PHOTOS.items():
        path = directory / f"{name}.jpg"
        Image.fromarray(load()).save(path, quality=95)
        photos[name] = Photo(path, expected)
    return photos


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def preprocess(path: Path, preprocessing: dict) -> np.ndarray:
    """uint8 HWC crop per the metadata's transform (the service's job; a reference here)."""
    image = Image.open(path).convert("RGB")
    resize, crop = preprocessing["resize_size"], preprocessing["crop_size"]
    w, h = image.size
    scale = resize / min(w, h)
    size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
    image = image.resize(size, _RESAMPLE[preprocessing["interpolation"]])
    left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
    return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
