"""Preprocessing equals torchvision's ImageClassification eval transform (within 1/255 MAD),
handles every mode and EXIF orientation, and refuses bad input before decoding it."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image, ImageFile
from service_helpers import encode
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from model_contract import Preprocessing
from model_contract.pixels import to_model_input, to_rgb
from service.errors import BadImage, EmptyBody, ImageTooLarge, UnsupportedMediaType
from service.pipeline.decode.image import DRAFT_HEADROOM, decode_image, open_image, preprocess

TOLERANCE = 1 / 255
LIMIT = 50_000_000


def spec_of(model: Path) -> Preprocessing:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["efficientnet"])
    return Preprocessing.model_validate(meta["preprocessing"])


@pytest.fixture(scope="module", params=["lite0", "b0"])
def spec(request: pytest.FixtureRequest) -> Preprocessing:
    return spec_of(
        request.getfixturevalue(
            f"{request.param}_onnx" if request.param == "lite0" else "b0_random_onnx"
        )
    )


def torchvision_pixels(img: Image.Image, spec: Preprocessing) -> np.ndarray:
    """The reference: torchvision's transform, un-normalized back to [0, 1] HWC."""
    torch.set_num_threads(1)
    transform = ImageClassification(
        crop_size=spec.crop_size,
        resize_size=spec.resize_size,
        mean=spec.mean,
        std=spec.std,
        interpolation=InterpolationMode(spec.interpolation),
    )
    x = transform(img)
    x = x * torch.tensor(spec.std).view(3, 1, 1) + torch.tensor(spec.mean).view(3, 1, 1)
    return x.permute(1, 2, 0).numpy()


def mad(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.float32) / 255 - reference).mean())


def test_equals_torchvision_on_real_photos(photos: dict[str, Any], spec: Preprocessing) -> None:
    for name, photo in photos.items():
        data = photo.path.read_bytes()
        ours = preprocess(data, spec, LIMIT)
        assert ours.shape == (spec.crop_size, spec.crop_size, 3) and ours.dtype == np.uint8
        reference = torchvision_pixels(Image.open(photo.path).convert("RGB"), spec)
        assert mad(ours, reference) < TOLERANCE, name


@pytest.mark.parametrize("box", [(0, 100, 451, 104), (200, 0, 201, 300), (0, 0, 451, 299)])
def test_thin_and_odd_images_equal_torchvision(
    chelsea: Image.Image, spec: Preprocessing, box: tuple[int, int, int, int]
) -> None:
    """Strips of a real photo (451x4, 1x300) and an odd size: resizing only the region the crop
    keeps gives what torchvision's resize-everything-then-crop gives."""
    strip = chelsea.crop(box)
    ours = to_model_input(strip, spec)
    assert ours.shape == (spec.crop_size, spec.crop_size, 3)
    assert mad(ours, torchvision_pixels(strip, spec)) < TOLERANCE, strip.size


def _phone_sized(img: Image.Image) -> bytes:
    """A 4032x3024 JPEG (a phone photo's size) with real texture tiled across it."""
    tiles = np.tile(
        np.asarray(img), (int(np.ceil(3024 / img.height)), int(np.ceil(4032 / img.width)), 1)
    )
    return encode(Image.fromarray(tiles[:3024, :4032]), "JPEG", quality=92)


def test_jpeg_draft_stays_within_tolerance(chelsea: Image.Image, spec: Preprocessing) -> None:
    data = _phone_sized(chelsea)
    drafted = decode_image(data, LIMIT, draft_to=spec.resize_size)
    assert drafted.size[0] < 4032, "draft mode should have decoded the JPEG smaller"
    reference = torchvision_pixels(Image.open(io.BytesIO(data)).convert("RGB"), spec)
    assert mad(preprocess(data, spec, LIMIT), reference) < TOLERANCE


class _CountingDecoder:
    """Pillow's decoder, counting the calls that hand it file data (each one a GIL hand-off)."""

    def __init__(self, decoder: Any, calls: list[int]) -> None:
        self._decoder, self._calls = decoder, calls

    def decode(self, data: bytes) -> tuple[int, int]:
        self._calls.append(len(data))
        return self._decoder.decode(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)


@pytest.mark.parametrize("drafted", [True, False])
def test_a_phone_jpeg_reaches_its_decoder_in_one_call(
    chelsea: Image.Image, spec: Preprocessing, drafted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _phone_sized(chelsea)
    assert len(data) > 16 * ImageFile.MAXBLOCK  # Pillow's own reads would take many calls
    calls: list[int] = []
    getdecoder = Image._getdecoder
    monkeypatch.setattr(
        Image, "_getdecoder", lambda *args: _CountingDecoder(getdecoder(*args), calls)
    )
    draft_to = spec.resize_size if drafted else None
    img = decode_image(data, LIMIT, draft_to=draft_to)
    assert len(calls) == 1, f"the decoder took the file in {len(calls)} pieces"
    reference = Image.open(io.BytesIO(data))  # read as Pillow reads it, 64 kB at a time
    if draft_to:
        reference.draft("RGB", (draft_to * DRAFT_HEADROOM,) * 2)
    assert np.array_equal(np.asarray(img), np.asarray(reference.convert("RGB")))


def test_a_truncated_phone_jpeg_is_refused(chelsea: Image.Image, spec: Preprocessing) -> None:
    data = _phone_sized(chelsea)
    with pytest.raises(BadImage, match="truncated"):
        preprocess(data[: len(data) // 2], spec, LIMIT)


def test_exif_orientation_is_applied(chelsea: Image.Image, spec: Preprocessing) -> None:
    stored = chelsea.transpose(Image.Transpose.ROTATE_90)  # sensor orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    tagged = encode(stored, "JPEG", quality=95, exif=exif)
    upright = encode(chelsea, "JPEG", quality=95)
    assert mad(preprocess(tagged, spec, LIMIT), preprocess(upright, spec, LIMIT) / 255) < 2 / 255
    untagged = encode(stored, "JPEG", quality=95)
    assert mad(preprocess(untagged, spec, LIMIT), preprocess(upright, spec, LIMIT) / 255) > 10 / 255


# --- modes ------------------------------------------------------------------------------------


def test_sixteen_bit_is_scaled_not_clipped(chelsea: Image.Image) -> None:
    gray8 = np.asarray(chelsea.convert("L"))
    gray16 = Image.fromarray(gray8.astype(np.uint16) * 257)  # full 16-bit range
    decoded = decode_image(encode(gray16, "PNG"), LIMIT)
    assert decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(decoded)[..., 0], gray8)


def test_alpha_is_composited_over_white(chelsea: Image.Image) -> None:
    rgba = chelsea.convert("RGBA")
    alpha = np.full(chelsea.size[::-1], 255, np.uint8)
    alpha[:, : chelsea.width // 2] = 0  # left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    out = np.asarray(decode_image(encode(rgba, "PNG"), LIMIT))
    assert (out[:, : chelsea.width // 2] == 255).all()
    np.testing.assert_array_equal(
        out[:, chelsea.width // 2 :], np.asarray(chelsea)[:, chelsea.width // 2 :]
    )


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "TIFF"), ("LA", "PNG"), ("1", "BMP")],
)
def test_every_mode_becomes_rgb(chelsea: Image.Image, mode: str, fmt: str) -> None:
    original = chelsea.convert(mode)
    decoded = decode_image(encode(original, fmt), LIMIT)
    assert decoded.mode == "RGB" and decoded.size == chelsea.size
    expected = np.asarray(original.convert("RGB"))  # fully opaque: compositing changes nothing
    np.testing.assert_array_equal(np.asarray(decoded), expected)


def test_gif_uses_first_frame(chelsea: Image.Image) -> None:
    black = Image.new("RGB", chelsea.size)
    data = encode(chelsea, "GIF", save_all=True, append_images=[black])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert np.asarray(decode_image(data, LIMIT)).mean() > 50  # not the black second frame


# --- refusals ---------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG claiming a huge canvas (a decompression bomb's header)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_refusals() -> None:
    with pytest.raises(EmptyBody):
        open_image(b"", LIMIT)
    with pytest.raises(UnsupportedMediaType):
        open_image(b"%PDF-1.7 not an image", LIMIT)
    with pytest.raises(ImageTooLarge):
        open_image(png_header(30000, 30000), LIMIT)
    with pytest.raises(ImageTooLarge):
        open_image(png_header(1000, 1000), 999_999)
    with pytest.raises(BadImage):
        decode_image(png_header(100, 100), LIMIT)  # the header promises more data than follows


def test_to_rgb_keeps_rgb_untouched(chelsea: Image.Image) -> None:
    assert to_rgb(chelsea) is chelsea
