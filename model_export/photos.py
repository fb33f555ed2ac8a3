"""The verification photos: six natural images shipped in the `photos/` folder beside this
module (its README gives their origin and licences), at the crop size of a preprocessing.

The export verifies every graph on them, and random weights take their BatchNorm statistics
from them, so both see the pixels the service would feed the graph.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from model_contract import Preprocessing, crop_offsets, resized_size

# Public-domain / CC0 photos from scikit-image's data folder (see photos/README.md).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "retina")
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def photo_paths() -> list[Path]:
    folder = resources.files("model_export").joinpath("photos")
    return [Path(str(folder.joinpath(f"{name}.jpg"))) for name in PHOTOS]


def describe_inputs() -> str:
    return f"{len(PHOTOS)} natural photos (skimage: {', '.join(PHOTOS)})"


def load_photo(path: Path, pre: Preprocessing) -> np.ndarray:
    """uint8 HWC: the weights' own eval transform (resize the shorter side, center-crop),
    as the service applies it: the contract's sizes and crop offsets."""
    image = Image.open(path).convert("RGB")
    size = resized_size(*image.size, pre.resize_size)
    image = image.resize(size, _RESAMPLE[pre.interpolation])
    left, top = crop_offsets(*size, pre.crop_size)
    box = (left, top, left + pre.crop_size, top + pre.crop_size)
    return np.asarray(image.crop(box), dtype=np.uint8)


def photo_batch(pre: Preprocessing) -> np.ndarray:
    """uint8 NHWC batch of every verification photo at the crop size."""
    return np.stack([load_photo(p, pre) for p in photo_paths()])
