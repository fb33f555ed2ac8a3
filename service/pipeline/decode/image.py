"""Upload bytes → the model's uint8 input, as torchvision's ``ImageClassification`` eval transform.

The service runs ``preprocess`` in its decode worker processes (workers.py), which
bound its time and memory; it is plain code that any process can call.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from model_contract import Preprocessing, crop_box
from service.config import MiB
from service.errors import BadImage, EmptyBody, ImageTooLarge, UnsupportedMediaType

# The formats the service promises; anything else Pillow might sniff (e.g. PSD, EPS via
# Ghostscript) is refused up front instead of widening the attack surface.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Leading bytes of the supported formats: an upload that starts like one of them but does not
# parse is a corrupt image (400), not an unsupported one (415).
SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def _looks_supported(data: bytes) -> bool:
    return data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}

# JPEG draft mode downsizes in the DCT domain (by 1/2, 1/4 or 1/8) while decoding. Keeping the
# drafted image at least this many times the resize target leaves the final antialiased resize
# enough pixels that the result stays within 1/255 of a full decode (tests/service/test_preprocess).
DRAFT_HEADROOM = 2

# 16-bit and 32-bit integer samples (PNG/TIFF) map 0..65535 onto 0..255; Pillow's own
# convert("RGB") would clip them instead, turning most 16-bit photos white.
_WIDE_INT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
WHITE = (255, 255, 255)

# ICC profiles from cameras and editors run to a few MB (print profiles, v4 LUT-based ones).
# Pillow inflates a PNG's iCCP chunk under its text-chunk bound (1 MB), so such photos were
# refused as corrupt; the total of text chunks stays under Pillow's own MAX_TEXT_MEMORY.
MAX_ICC_PROFILE_BYTES = 16 * MiB

# to_model_input converts and resizes the kept region this many rows at a time: the mode
# conversion's copies (alpha over white: three of them) then cost a strip, not the image.
STRIP_ROWS = 256


def configure_pillow(max_pixels: int) -> None:
    """Process-wide Pillow settings the service needs (called at start-up and in each worker).

    Pillow's own pixel check (refusing over twice MAX_IMAGE_PIXELS at open) stays as a backstop
    behind open_image's: only raised, so a configured limit above Pillow's default is honoured.
    """
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, MAX_ICC_PROFILE_BYTES)


# Pillow messages that name its own settings; a client gets what they mean instead.
_PILLOW_WORDING = {
    "PngImagePlugin.MAX_TEXT_CHUNK": "a compressed PNG text or ICC profile chunk inflates "
    f"past {MAX_ICC_PROFILE_BYTES // MiB} MiB",
    "MAX_TEXT_MEMORY": "the PNG's text chunks inflate past 64 MiB in all",
}


def describe(exc: Exception) -> str:
    """Pillow's reason for refusing a file, without its internal names."""
    message = str(exc) or type(exc).__name__
    for internal, meaning in _PILLOW_WORDING.items():
        if internal in message:
            return meaning
    return message


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Parse only the header; refuse empty bodies, non-images and oversized canvases."""
    if not data:
        raise EmptyBody("empty body: send an image file")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below decides; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        if _looks_supported(data):
            raise BadImage("corrupt image: its header does not parse") from None
        raise UnsupportedMediaType(
            "not an image, or a format the service does not decode "
            f"(supported: {', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except Exception as exc:  # a header Pillow recognizes but cannot parse
        raise BadImage(f"corrupt image header: {describe(exc)}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    if width < 1 or height < 1:
        raise BadImage(f"image has no pixels ({width}x{height})")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode → RGB: alpha composited over white, palette expanded, 16-bit scaled to 8-bit."""
    if img.mode == "RGB":
        return img
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


def load_upright(data: bytes, max_pixels: int, draft_to: int | None = None) -> Image.Image:
    """Decode an upload, upright but in its own mode; raises ServiceError 400/413/415.

    ``draft_to``: the shorter side the caller will resize to; lets big JPEGs decode smaller.
    """
    img = open_image(data, max_pixels)
    with decoding_errors():
        if draft_to and img.format == "JPEG":
            side = draft_to * DRAFT_HEADROOM
            img.draft(img.mode, (side, side))
        img.load()
        # In place: the default returns a copy even when there is nothing to rotate, which
        # doubled every decode's memory.
        ImageOps.exif_transpose(img, in_place=True)
        return img


def decode_image(data: bytes, max_pixels: int, draft_to: int | None = None) -> Image.Image:
    """Decode an upload to an upright RGB image; raises ServiceError 400/413/415."""
    img = load_upright(data, max_pixels, draft_to)
    with decoding_errors():
        return to_rgb(img)


@contextmanager
def decoding_errors() -> Iterator[None]:
    """Pillow's failures while decoding → the service's errors, in words a client can use."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image too large: {exc}") from None
    except MemoryError:
        raise  # not a corrupt image: preprocess() answers 413
    except Exception as exc:  # Pillow reports bad data as OSError, SyntaxError, ValueError, ...
        raise BadImage(f"truncated or corrupt image: {describe(exc)}") from None


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


def preprocess(data: bytes, spec: Preprocessing, max_pixels: int) -> np.ndarray:
    """Upload bytes → uint8 HWC model input; raises ServiceError (4xx) for anything refused."""
    try:
        img = load_upright(data, max_pixels, draft_to=spec.resize_size)
        with decoding_errors():
            return to_model_input(img, spec)
    except MemoryError:
        # Under the pixel limit but still more than this process can hold right now.
        raise ImageTooLarge("image too large to decode with the memory available") from None
