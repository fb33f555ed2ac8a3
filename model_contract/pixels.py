"""How a decoded image becomes the graph's uint8 input: any mode to RGB (alpha over white,
palette expanded, 16-bit and float samples scaled) and the preprocessing's resize of the
shorter side and center crop, with geometry.py's sizes and offsets.

The service's decoder (service/pipeline/decode/image.py) applies these to every upload and the
exporter's training (model_export/train/) to every image it learns from, so what a model is
trained on is exactly what it is served. Pillow and numpy, which both wings have; no torch, no
onnxruntime.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .geometry import crop_box
from .metadata import Preprocessing

# The formats the service promises (and training reads); anything else Pillow might sniff
# (e.g. PSD, EPS via Ghostscript) is refused up front instead of widening the attack surface.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}

# 16-bit and 32-bit integer samples (PNG/TIFF) map 0..65535 onto 0..255; Pillow's own
# convert("RGB") would clip them instead, turning most 16-bit photos white.
_WIDE_INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
WHITE = (255, 255, 255)

# to_model_input converts and resizes the kept region this many rows at a time: the mode
# conversion's copies (alpha over white: three of them) then cost a strip, not the image.
STRIP_ROWS = 256


class UnsupportedSamples(ValueError):
    """Samples the pixel rules cannot read without guessing (float ones outside 0..1)."""


def check_samples(img: Image.Image) -> None:
    """Whole-image checks before converting part by part: float samples must lie in 0..1.

    Image tools read float samples as 0..1 (scikit-image, OpenCV, GIMP); Pillow's own
    ``convert`` clips them to 0..255 instead, which reads a 0..1 photo as black. Samples outside
    0..1 have no agreed meaning (0..255 floats, HDR radiance): refused, never guessed.
    """
    if img.mode != "F":
        return
    low, high = img.getextrema()  # Pillow's C loop over the image: no copy
    if not (0.0 <= low <= high <= 1.0):  # also false for NaN
        raise UnsupportedSamples(
            f"32-bit float samples from {low:g} to {high:g}: float images are read as 0..1; "
            "send 8- or 16-bit samples (or floats scaled to 0..1)"
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode → RGB: alpha composited over white, palette expanded, 16-bit scaled to 8-bit,
    float (0..1, see ``check_samples``) scaled to 8-bit."""
    if img.mode == "RGB":
        return img
    if img.mode == "F":
        samples = np.asarray(img, dtype=np.float32)
        if not np.isfinite(samples).all():  # getextrema skips NaN: a few would read as black
            raise UnsupportedSamples("32-bit float samples that are not numbers (NaN)")
        img = Image.fromarray(np.clip(samples * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _WIDE_INT_MODES:
        wide = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(wide / 257.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# How far (in output pixels) each of Pillow's filters reaches; scaled by the downsizing factor.
FILTER_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0, "nearest": 0.5}


def _reach(low: float, high: float, scale: float, support: float, limit: int) -> tuple[int, int]:
    """Source pixels [a, b) a resampling filter reads for the output span [low, high)."""
    margin = math.ceil(support * max(scale, 1.0)) + 1
    return max(0, math.floor(low) - margin), min(limit, math.ceil(high) + margin)


def to_model_input(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Image (any mode) → uint8 HWC ``crop×crop×3`` (normalization happens inside the graph).

    Resizes only the region the center crop keeps, never the whole image: a 1×4000 strip would
    otherwise become 256×1,024,000 (~1 GB) before the crop. It copies out the source pixels the
    filter reaches for that region, then resizes them with Pillow's ``box`` (whose filter scale is
    box→size, the same as the full image's, with the same sample centres), horizontally then
    vertically like Pillow's own resize: the result equals resize-then-crop, within a level. (One
    two-axis box resize does not: it may run the passes in the other order, and bicubic
    overshoot clipped between the passes then differs by up to ~20 levels.)

    The horizontal pass reads one row at a time, and to_rgb works pixel by pixel, so both run
    STRIP_ROWS rows at a time: the same bytes as converting and resizing the whole region, for
    a fraction of the memory (an RGBA photo's conversion to RGB took three full copies).
    """
    check_samples(img)
    left, top, right, bottom = crop_box(*img.size, spec)
    crop = spec.crop_size
    support = FILTER_SUPPORT[spec.interpolation]
    x0, x1 = _reach(left, right, (right - left) / crop, support, img.width)
    y0, y1 = _reach(top, bottom, (bottom - top) / crop, support, img.height)
    resample = RESAMPLE[spec.interpolation]
    across = Image.new("RGB", (crop, y1 - y0))
    for start in range(y0, y1, STRIP_ROWS):
        end = min(start + STRIP_ROWS, y1)
        strip = to_rgb(img.crop((x0, start, x1, end)))
        rows = end - start
        part = strip.resize((crop, rows), resample, box=(left - x0, 0, right - x0, rows))
        across.paste(part, (0, start - y0))
    out = across.resize((crop, crop), resample, box=(0, top - y0, crop, bottom - y0))
    return np.asarray(out)
