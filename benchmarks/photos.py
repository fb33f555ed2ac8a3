"""The benchmark's images: scikit-image's real photos, saved once per run as quality-90 JPEGs
at the two sizes a service really receives (a web image and a phone camera frame)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

# Real photos bundled with scikit-image (no download needed).
PHOTO_NAMES: tuple[str, ...] = ("chelsea", "coffee", "astronaut")
WEB_SIZE = (640, 480)
PHONE_SIZE = (4032, 3024)
JPEG_QUALITY = 90
# Upscaling a small photo leaves it unnaturally smooth, so it would compress to a fraction of
# a real phone JPEG's size; a little sensor-like noise brings size and decode cost back to
# what a camera file costs. Fixed seed: the same bytes in every run.
PHONE_NOISE_SIGMA = 4.0


@dataclass(frozen=True)
class Photo:
    name: str
    size: tuple[int, int]
    path: Path
    data: bytes


def load_photo(name: str) -> Image.Image:
    array = getattr(skdata, name)()
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def fit_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Center-crop to the target aspect ratio, then resize (Lanczos) to exactly `size`."""
    width, height = img.size
    target_w, target_h = size
    scale = min(width / target_w, height / target_h)
    crop_w, crop_h = round(target_w * scale), round(target_h * scale)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    cropped = img.crop((left, top, left + crop_w, top + crop_h))
    return cropped.resize(size, Image.Resampling.LANCZOS)


def add_noise(img: Image.Image, sigma: float, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = np.asarray(img, dtype=np.float32)
    noisy = array + rng.normal(0.0, sigma, size=array.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_photo(name: str, size: tuple[int, int], out_dir: Path, seed: int = 0) -> Photo:
    img = fit_to(load_photo(name), size)
    if size[0] * size[1] > WEB_SIZE[0] * WEB_SIZE[1]:
        img = add_noise(img, PHONE_NOISE_SIGMA, seed)
    path = out_dir / f"{name}_{size[0]}x{size[1]}.jpg"
    img.save(path, format="JPEG", quality=JPEG_QUALITY)
    return Photo(name=name, size=size, path=path, data=path.read_bytes())


def make_photo_set(
    out_dir: Path,
    sizes: tuple[tuple[int, int], ...] = (WEB_SIZE, PHONE_SIZE),
    names: tuple[str, ...] = PHOTO_NAMES,
) -> list[Photo]:
    """Every photo at every size, web first: the request mix the benchmarks cycle through."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        make_photo(name, size, out_dir, seed=i) for size in sizes for i, name in enumerate(names)
    ]
