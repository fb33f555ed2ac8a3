"""Upload bytes → the model's uint8 input, as torchvision's ``ImageClassification`` eval transform.

The service runs ``preprocess`` in its decode worker processes (workers.py), which
bound its time and memory; it is plain code that any process can call.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from model_contract import Preprocessing
from model_contract.pixels import FORMATS, UnsupportedSamples, to_model_input, to_rgb
from service.config import MiB
from service.errors import BadImage, EmptyBody, ImageTooLarge, UnsupportedMediaType

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


# JPEG draft mode downsizes in the DCT domain (by 1/2, 1/4 or 1/8) while decoding. Keeping the
# drafted image at least this many times the resize target leaves the final antialiased resize
# enough pixels that the result stays within 1/255 of a full decode (tests/service/test_preprocess).
DRAFT_HEADROOM = 2

# Pillow hands a file to its decoder 64 kB at a time and takes the GIL back between the pieces:
# a 2 MB phone photo waited for the GIL 32 times, behind whatever the event loop was running.
# In pieces of up to 4 MiB a photo decodes in one call without the GIL, for at most 4 MiB more
# memory than the file. At 16 phone uploads at once the machine's idle CPU went from 7 % to 3 %
# and throughput up 5 % (BENCHMARKS.md, "One GIL hand-off per JPEG").
JPEG_READ_BLOCK = 4 * MiB

# ICC profiles from cameras and editors run to a few MB (print profiles, v4 LUT-based ones).
# Pillow inflates a PNG's iCCP chunk under its text-chunk bound (1 MB), so such photos were
# refused as corrupt; the total of text chunks stays under Pillow's own MAX_TEXT_MEMORY.
MAX_ICC_PROFILE_BYTES = 16 * MiB


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


def load_upright(data: bytes, max_pixels: int, draft_to: int | None = None) -> Image.Image:
    """Decode an upload, upright but in its own mode; raises ServiceError 400/413/415.

    ``draft_to``: the shorter side the caller will resize to; lets big JPEGs decode smaller.
    """
    img = open_image(data, max_pixels)
    with decoding_errors():
        if img.format == "JPEG":
            img.decodermaxblock = JPEG_READ_BLOCK
            if draft_to:
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
    except UnsupportedSamples as exc:  # a sound file whose samples have no agreed reading
        raise UnsupportedMediaType(str(exc)) from None
    except Exception as exc:  # Pillow reports bad data as OSError, SyntaxError, ValueError, ...
        raise BadImage(f"truncated or corrupt image: {describe(exc)}") from None


def preprocess(data: bytes, spec: Preprocessing, max_pixels: int) -> np.ndarray:
    """Upload bytes → uint8 HWC model input; raises ServiceError (4xx) for anything refused."""
    try:
        img = load_upright(data, max_pixels, draft_to=spec.resize_size)
        with decoding_errors():
            return to_model_input(img, spec)
    except MemoryError:
        # Under the pixel limit but still more than this process can hold right now.
        raise ImageTooLarge("image too large to decode with the memory available") from None
