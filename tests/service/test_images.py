"""Every format and image mode, and EXIF rotation, end to end through /classify."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import encode, scores, top1

pytestmark = pytest.mark.asyncio(loop_scope="session")
CAT = {281, 282, 285}  # tabby, tiger cat, Egyptian cat: what lite0 must see in chelsea


async def classify(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post(
        "/classify", content=data, headers={"content-type": "application/octet-stream"}
    )


def close(a: dict[int, float], b: dict[int, float], tol: float) -> bool:
    return list(a) == list(b) and all(abs(a[k] - b[k]) <= tol for k in a)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("JPEG", {"quality": 90}),
        ("PNG", {}),
        ("WEBP", {"quality": 90}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
    ],
)
async def test_every_format(
    lite0: httpx.AsyncClient, chelsea: Image.Image, fmt: str, params: dict
) -> None:
    data = encode(chelsea, fmt, **params)
    assert Image.open(io.BytesIO(data)).format == fmt
    assert top1(await classify(lite0, data)) in CAT


def sixteen_bit(img: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)


# (mode, how to build it from the RGB photo, format, the RGB image it must be treated as)
MODES = {
    "L": (lambda im: im.convert("L"), "PNG", lambda im: im.convert("L").convert("RGB")),
    "P": (lambda im: im.convert("P"), "PNG", lambda im: im.convert("P").convert("RGB")),
    "RGBA": (lambda im: im.convert("RGBA"), "PNG", lambda im: im),
    "CMYK": (lambda im: im.convert("CMYK"), "TIFF", lambda im: im),
    "I;16": (sixteen_bit, "PNG", lambda im: im.convert("L").convert("RGB")),
    "LA": (lambda im: im.convert("LA"), "PNG", lambda im: im.convert("L").convert("RGB")),
    "1": (lambda im: im.convert("1"), "PNG", lambda im: im.convert("1").convert("RGB")),
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_every_mode(lite0: httpx.AsyncClient, chelsea: Image.Image, mode: str) -> None:
    build, fmt, equivalent = MODES[mode]
    image = build(chelsea)
    data = encode(image, fmt)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.mode in {mode, "I"} if mode == "I;16" else reopened.mode == mode
    got = scores(await classify(lite0, data))
    want = scores(await classify(lite0, encode(equivalent(chelsea), "PNG")))
    assert close(got, want, 1e-4), (mode, got, want)
    if mode in {"P", "RGBA", "CMYK"}:  # colour survives: still a cat
        assert next(iter(got)) in CAT


async def test_transparent_pixels_become_white(
    lite0: httpx.AsyncClient, chelsea: Image.Image
) -> None:
    rgba = chelsea.convert("RGBA")
    alpha = np.full(chelsea.size[::-1], 255, np.uint8)
    alpha[: chelsea.height // 3] = 0
    rgba.putalpha(Image.fromarray(alpha))
    white_top = np.asarray(chelsea).copy()
    white_top[: chelsea.height // 3] = 255
    got = scores(await classify(lite0, encode(rgba, "PNG")))
    want = scores(await classify(lite0, encode(Image.fromarray(white_top), "PNG")))
    assert close(got, want, 1e-4)


async def test_exif_rotated_photo_classifies_like_upright(
    lite0: httpx.AsyncClient, chelsea: Image.Image
) -> None:
    for orientation, turn, undo in (
        (
            6,
            Image.Transpose.ROTATE_90,
            Image.Transpose.ROTATE_270,
        ),  # phone upright, sensor sideways
        (8, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_90),
        (3, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_180),
    ):
        exif = Image.Exif()
        exif[0x0112] = orientation
        tagged = encode(chelsea.transpose(turn), "JPEG", quality=95, exif=exif)
        # The same decoded pixels, turned upright by hand and stored losslessly.
        upright = encode(Image.open(io.BytesIO(tagged)).transpose(undo), "PNG")
        got = scores(await classify(lite0, tagged))
        want = scores(await classify(lite0, upright))
        assert close(got, want, 1e-4), orientation
        assert next(iter(got)) in CAT
        untagged = encode(Image.open(io.BytesIO(tagged)), "PNG")  # EXIF dropped
        assert not close(scores(await classify(lite0, untagged)), want, 0.05)
