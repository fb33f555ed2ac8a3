"""The expensive lane piece by piece: the plan's time estimate sorts uploads into cheap and
expensive from their header, and a Decoder over real worker processes lets expensive decodes
hold every worker but one, so a cheap upload never waits for them."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
import zlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from service_helpers import encode

from model_contract import Preprocessing
from service.pipeline.decode.checks import plan_decode
from service.pipeline.decode.cost import EXPENSIVE_DECODE_S, QUICK_DECODE_S
from service.pipeline.decode.decoder import Decoder, expensive_slots
from service.pipeline.decode.image import preprocess
from service.pipeline.decode.workers import DecodeLimits

SPEC = Preprocessing(
    resize_size=256, crop_size=224, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3
)
LIMIT = 50_000_000
MiB = 1024 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(side: int) -> bytes:
    """A valid flat grey PNG of side×side, compressed to a few hundred kB."""
    row = b"\x00" + bytes(side)
    packer = zlib.compressobj(6)
    parts = [packer.compress(row * 100) for _ in range(side // 100)]
    raw = b"".join([*parts, packer.compress(row * (side % 100)), packer.flush()])
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", raw) + _chunk(b"IEND", b"")
    )


def rle8_bmp(side: int, run: int) -> bytes:
    """An 8-bit BMP of side×side run-length encoded (BI_RLE8) in runs of ``run`` pixels."""
    row = bytes((run, 128)) * (side // run) + b"\x00\x00"
    pixels = row * side + b"\x00\x01"
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(pixels), 0, 0, 256, 0)
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + len(info) + len(palette)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info
    return head + palette + pixels


def _expensive(data: bytes) -> bool:
    return plan_decode(data, LIMIT, SPEC.resize_size).expensive


def test_photos_up_to_12_mp_are_cheap_in_any_format() -> None:
    phone = Image.new("RGB", (4000, 3000), (90, 120, 150))
    assert not _expensive(encode(phone, "JPEG", quality=90))
    assert not _expensive(encode(phone, "JPEG", quality=95, subsampling=0))
    assert not _expensive(encode(phone, "JPEG", quality=90, progressive=True))
    assert not _expensive(encode(phone, "PNG"))
    assert not _expensive(encode(phone, "BMP"))
    big = Image.new("RGB", (8000, 6000))  # a 48 MP camera's baseline JPEG: drafted, 59 ms
    assert not _expensive(encode(big, "JPEG", quality=90))


def test_big_images_of_slow_formats_are_expensive() -> None:
    assert _expensive(grey_png(7000))
    assert _expensive(rle8_bmp(7000, 255))
    # A progressive 49 MP JPEG of 30 scans: the work is pixels × scans.
    grey = encode(Image.new("L", (7000, 7000), 100), "JPEG", progressive=True)
    last = grey.rindex(b"\xff\xda")
    assert _expensive(grey[:-2] + grey[last:-2] * 24 + b"\xff\xd9")


def test_a_python_decoded_codec_costs_by_its_bytes() -> None:
    """Pillow decodes BMP's RLE in Python, a loop step per run: the same 2000x2000 image is
    cheap in 250-pixel runs and expensive in 2-pixel runs (4 MB)."""
    long_runs, short_runs = rle8_bmp(2000, 250), rle8_bmp(2000, 2)
    assert not _expensive(long_runs)
    plan = plan_decode(short_runs, LIMIT, SPEC.resize_size)
    assert plan.expensive and plan.decode_s > 2 * EXPENSIVE_DECODE_S, plan


def test_expensive_slots_leave_one_worker() -> None:
    assert [expensive_slots(n) for n in (1, 2, 3, 8)] == [1, 1, 2, 7]


@pytest.fixture
async def decoder() -> AsyncIterator[Decoder]:
    """Two real workers and two decode threads, as on the 2-core machine."""
    limits = DecodeLimits(workers=2, timeout_s=60, memory_bytes=1024 * MiB, max_pixels=LIMIT)
    with ThreadPoolExecutor(2, thread_name_prefix="preprocess") as executor:
        decoder = Decoder(SPEC, limits, executor)
        try:
            yield decoder
        finally:
            decoder.close()


def _record_spans(
    decoder: Decoder, monkeypatch: pytest.MonkeyPatch, heavy: bytes
) -> list[tuple[bool, float, float]]:
    """(expensive?, start, end) of every decode the workers run."""
    spans: list[tuple[bool, float, float]] = []
    run = decoder.pool.run

    def timed(data: bytes) -> np.ndarray:
        started = time.monotonic()
        try:
            return run(data)
        finally:
            spans.append((data is heavy, started, time.monotonic()))

    monkeypatch.setattr(decoder.pool, "run", timed)
    return spans


async def test_a_cheap_upload_never_waits_for_expensive_ones(
    decoder: Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cheap upload a PNG: a worker decodes it (a baseline JPEG would not need one).
    heavy, photo = grey_png(7000), encode(Image.new("RGB", (640, 480), (200, 30, 30)), "PNG")
    spans = _record_spans(decoder, monkeypatch, heavy)
    expensive = [asyncio.create_task(decoder.preprocess(heavy)) for _ in range(3)]
    await asyncio.sleep(0.05)  # they are in first
    assert (await decoder.preprocess(photo)).shape == (224, 224, 3)
    assert not all(task.done() for task in expensive)
    assert all(image.shape == (224, 224, 3) for image in await asyncio.gather(*expensive))
    heavy_spans = sorted((start, end) for is_heavy, start, end in spans if is_heavy)
    (cheap_start,) = [start for is_heavy, start, _ in spans if not is_heavy]
    assert len(heavy_spans) == 3
    # One expensive decode at a time on two workers; the cheap one began during the first.
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(heavy_spans))
    assert cheap_start < heavy_spans[0][1]
    assert decoder.lane.free == decoder.lane.total == 1
    assert decoder.budget.free == decoder.budget.total


async def test_cancelled_expensive_uploads_give_their_slot_back(decoder: Decoder) -> None:
    """A request timeout while decoding holds the slot until the worker is done; one while
    waiting for the slot takes nothing. Then the next expensive upload decodes."""
    heavy = grey_png(7000)
    decoding = asyncio.create_task(decoder.preprocess(heavy))
    waiting = asyncio.create_task(decoder.preprocess(heavy))
    await asyncio.sleep(0.3)
    assert decoder.lane.free == 0
    waiting.cancel()
    decoding.cancel()
    await asyncio.gather(decoding, waiting, return_exceptions=True)
    deadline = time.monotonic() + 30
    while decoder.lane.free == 0 and time.monotonic() < deadline:  # the worker finishes
        await asyncio.sleep(0.05)
    assert decoder.lane.free == 1 and decoder.budget.free == decoder.budget.total
    assert (await decoder.preprocess(heavy)).shape == (224, 224, 3)
    assert decoder.lane.free == 1 and decoder.budget.free == decoder.budget.total


def _noise(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8))


def test_only_small_baseline_jpegs_are_quick() -> None:
    """Decoded without a worker: one-scan Huffman JPEGs whose pixels and bytes bound the time."""
    photo = Image.new("RGB", (640, 480), (200, 30, 30))
    quick = [encode(photo, "JPEG", quality=90), encode(photo, "JPEG", quality=95, subsampling=0)]
    assert all(plan_decode(d, LIMIT, 256).quick for d in quick)
    slow = [
        encode(photo, "JPEG", progressive=True),  # scans: a worker's kill bounds them
        encode(photo, "PNG"),
        encode(photo, "WEBP"),
        encode(_noise(1500, 1500), "JPEG", quality=100, subsampling=0),  # 8 MB of entropy
        encode(Image.new("RGB", (8000, 6000)), "JPEG", quality=90),  # 48 MP
    ]
    assert not any(plan_decode(d, LIMIT, 256).quick for d in slow)
    arithmetic = bytearray(quick[0])
    sof = arithmetic.index(b"\xff\xc0")
    arithmetic[sof + 1] = 0xC9  # the same frame, arithmetic-coded
    assert not plan_decode(bytes(arithmetic), LIMIT, 256).quick


def test_the_quick_estimate_is_an_upper_bound() -> None:
    """The slowest quick files (noise: entropy at its densest) decode within their estimate."""
    for image, quality in ((_noise(2000, 2000), 60), (_noise(1000, 1000), 100)):
        data = encode(image, "JPEG", quality=quality)
        plan = plan_decode(data, LIMIT, 256)
        assert plan.quick and plan.decode_s <= QUICK_DECODE_S
        seconds = []
        for _ in range(3):  # the best of three: a busy machine's hiccups are not the file's
            started = time.process_time()
            preprocess(data, SPEC, LIMIT)
            seconds.append(time.process_time() - started)
        assert min(seconds) < plan.decode_s


async def test_quick_uploads_take_no_worker(
    decoder: Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = Image.new("RGB", (640, 480), (200, 30, 30))
    spans = _record_spans(decoder, monkeypatch, b"")
    jpeg, png = encode(photo, "JPEG", quality=90), encode(photo, "PNG")
    assert np.array_equal(await decoder.preprocess(jpeg), preprocess(jpeg, SPEC, LIMIT))
    assert spans == []
    assert (await decoder.preprocess(png)).shape == (224, 224, 3)
    assert len(spans) == 1
    assert decoder.budget.free == decoder.budget.total
