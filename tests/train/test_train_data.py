"""Training reads an image exactly as the service does (same pixels for the modes and the EXIF
rotation the service handles), and its split is stratified and seeded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export.train.data import Sample, Skipped, read_pixels, split_indices
from model_export.variants import VARIANTS
from service.pipeline.decode.image import preprocess

PRE = VARIANTS["lite0"].default_preprocessing()


def _photo(size: tuple[int, int] = (300, 200)) -> np.ndarray:
    """A smooth gradient with an edge: resizing it tells filters and offsets apart."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([x * 255 // size[0], y * 255 // size[1], ((x // 37 + y // 23) % 2) * 200], -1)
    return rgb.astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _files() -> dict[str, bytes]:
    rgb = Image.fromarray(_photo())
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((_photo()[..., 0] > 128).astype(np.uint8) * 255))
    wide = Image.fromarray(_photo()[..., 1].astype(np.uint16) * 257)  # mode I;16
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: the service turns it upright
    return {
        "rgb.png": _encode(rgb, "PNG"),
        "alpha.png": _encode(rgba, "PNG"),  # over white, not black
        "wide.png": _encode(wide, "PNG"),  # 16-bit, scaled rather than clipped
        "palette.gif": _encode(rgb.convert("P"), "GIF"),
        "grey.bmp": _encode(rgb.convert("L"), "BMP"),
        "rotated.jpg": _encode(rgb, "JPEG", quality=90, exif=exif),
    }


@pytest.mark.parametrize("name", sorted(_files()))
def test_training_reads_the_pixels_the_service_feeds_the_graph(name: str, tmp_path: Path):
    data = _files()[name]
    path = tmp_path / name
    path.write_bytes(data)
    got = read_pixels(Sample(path, 0), PRE)
    assert not isinstance(got, Skipped), got
    np.testing.assert_array_equal(got, preprocess(data, PRE, 50_000_000))


def test_the_exif_rotation_is_applied(tmp_path: Path) -> None:
    """The case above is not vacuous: without its EXIF tag the same JPEG reads differently."""
    rotated = tmp_path / "rotated.jpg"
    rotated.write_bytes(_files()["rotated.jpg"])
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(_encode(Image.fromarray(_photo()), "JPEG", quality=90))
    a, b = read_pixels(Sample(rotated, 0), PRE), read_pixels(Sample(plain, 0), PRE)
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 20


def test_the_split_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(3), [10, 5, 2])
    train, held = split_indices(labels, 3, seed=0)
    assert sorted([*train, *held]) == list(range(17)) and not set(train) & set(held)
    assert np.bincount(labels[held]).tolist() == [2, 1, 1]  # a fifth, at least one
    assert np.bincount(labels[train]).tolist() == [8, 4, 1]  # at least one left to train on
    again, _ = split_indices(labels, 3, seed=0)
    other, _ = split_indices(labels, 3, seed=1)
    assert again.tolist() == train.tolist() and other.tolist() != train.tolist()
