"""The decode bounds piece by piece: structural checks, the memory estimate and budget, and the
worker pool (real forkserver processes: timeouts kill, RLIMIT_AS holds, a close stops them)."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from service_helpers import encode

from model_contract import Preprocessing
from model_contract.pixels import STRIP_ROWS
from service.errors import (
    DecodeTooExpensive,
    ImageTooLarge,
    NotReady,
    ServiceError,
)
from service.pipeline.decode.budget import DecodeBudget
from service.pipeline.decode.checks import (
    MAX_JPEG_SCAN_PIXELS,
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    DecodePlan,
    check_structure,
    decodes_one_scan,
    jpeg_scan_count,
    plan_decode,
)
from service.pipeline.decode.image import preprocess
from service.pipeline.decode.workers import SHUTDOWN_DECODE_S, DecodeLimits, DecodePool

SPEC = Preprocessing(
    resize_size=256, crop_size=224, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3
)
LIMIT = 50_000_000
MiB = 1024 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def flat_png(width: int, height: int, *, idat_chunks: int = 1) -> bytes:
    """A valid black RGB PNG; its compressed data split over ``idat_chunks`` chunks."""
    row = b"\x00" + bytes(width * 3)
    packer = zlib.compressobj(6)
    parts = [packer.compress(row * 100) for _ in range(height // 100)]
    raw = b"".join([*parts, packer.compress(row * (height % 100)), packer.flush()])
    step = -(-len(raw) // idat_chunks)
    idats = [_chunk(b"IDAT", raw[i : i + step]) for i in range(0, len(raw), step)]
    idats += [_chunk(b"IDAT", b"")] * (idat_chunks - len(idats))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"".join(idats) + _chunk(b"IEND", b"")


def progressive(mode: str, extra_scans: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    data = encode(Image.new(mode, size, 100), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * extra_scans + b"\xff\xd9"


def test_scan_count_follows_the_encoder() -> None:
    assert jpeg_scan_count(encode(Image.new("RGB", (64, 48)), "JPEG")) == 1
    assert jpeg_scan_count(progressive("L")) == 6  # libjpeg's script for one component
    assert jpeg_scan_count(progressive("RGB")) == 10
    assert jpeg_scan_count(progressive("L", extra_scans=50)) == 56


def test_scan_limits_refuse_bombs_and_pass_photos() -> None:
    check_structure(progressive("RGB"), LIMIT)  # an honest 50 MP progressive photo
    many = progressive("L", extra_scans=MAX_JPEG_SCANS)
    with pytest.raises(DecodeTooExpensive, match="scans"):
        check_structure(many, 64 * 48)
    # Few scans, but of a big image: the work is pixels × scans.
    scans = MAX_JPEG_SCAN_PIXELS // LIMIT + 1
    heavy = progressive("L", extra_scans=scans - 6)
    check_structure(heavy, 1_000_000)
    with pytest.raises(DecodeTooExpensive):
        check_structure(heavy, LIMIT)


def test_a_one_scan_sequential_jpeg_is_not_walked_and_scans_after_it_are_refused() -> None:
    """libjpeg decodes the one scan of an interleaved sequential frame and stops at any later
    SOS: the plan need not count them, and a file padded with them decodes to a clear 400,
    in about the time of its first scan, not a 500 or a long decode."""
    plain = encode(Image.new("RGB", (640, 480), (10, 120, 200)), "JPEG")
    assert decodes_one_scan(plain)
    first = plain.index(b"\xff\xda")
    padded = plain[:-2] + plain[first:-2] * 200 + b"\xff\xd9"
    assert jpeg_scan_count(padded) == 201
    assert check_structure(padded, 640 * 480) == 1
    plan = plan_decode(padded, LIMIT, draft_to=256)
    assert plan.baseline_jpeg and plan.quick
    with pytest.raises(ServiceError) as refused:
        preprocess(padded, SPEC, LIMIT)
    assert refused.value.status_code == 400
    # Progressive and grey-progressive files are still walked and counted.
    assert not decodes_one_scan(progressive("RGB"))
    assert check_structure(progressive("L", extra_scans=20), 64 * 48) == 26


def test_a_sequential_jpeg_whose_first_scan_lacks_a_component_is_walked() -> None:
    """A non-interleaved sequential file (one component per scan) decodes every scan: it is
    counted like a progressive one."""
    plain = encode(Image.new("RGB", (64, 48)), "JPEG")
    first = plain.index(b"\xff\xda")
    one_component = bytearray(plain)
    one_component[first + 4] = 1  # Ns: the scan header now names fewer components than the frame
    assert not decodes_one_scan(bytes(one_component))


def test_png_chunk_limit() -> None:
    check_structure(flat_png(64, 64, idat_chunks=100), 64 * 64)
    with pytest.raises(DecodeTooExpensive, match="chunks"):
        check_structure(flat_png(64, 64, idat_chunks=MAX_PNG_CHUNKS + 1), 64 * 64)


def test_plan_estimates_the_decoded_memory() -> None:
    rgba = encode(Image.new("RGBA", (1000, 500)), "PNG")
    plan = plan_decode(rgba, LIMIT, draft_to=256)
    assert (plan.width, plan.height, plan.mode) == (1000, 500, "RGBA")
    assert plan.memory_bytes == 1000 * 500 * 4 + 1000 * STRIP_ROWS * 4 * 5
    # A baseline JPEG decodes drafted (here 1/2 of 2000x1600): 1000x800 at 4 bytes a pixel.
    plain = encode(Image.new("RGB", (2000, 1600)), "JPEG")
    assert plan_decode(plain, LIMIT, draft_to=256).memory_bytes == 1000 * 800 * 4
    # A progressive one keeps every coefficient at full size until its last scan.
    prog = encode(Image.new("L", (2000, 1600)), "JPEG", progressive=True)
    drafted = 1000 * 800 + 1000 * STRIP_ROWS * 4 * 5  # L: converted to RGB in strips
    assert plan_decode(prog, LIMIT, draft_to=256).memory_bytes == drafted + 2000 * 1600 * 2


def _exif_with_orientation(kind: int, count: int, inline: bytes) -> bytes:
    """An EXIF block whose only entry is Orientation (0x0112) of any TIFF type, written by hand:
    Pillow refuses to write one that is not a SHORT, but cameras and editors do."""
    entry = struct.pack(">HHI", 0x0112, kind, count) + inline.ljust(4, b"\0")
    return b"Exif\0\0MM\0\x2a" + struct.pack(">IH", 8, 1) + entry + struct.pack(">I", 0)


@pytest.mark.parametrize(
    ("kind", "count", "inline"),
    [(2, 3, b"ab\0"), (2, 2, b"6\0"), (3, 2, struct.pack(">HH", 6, 1)), (3, 1, b"\0\x63")],
    ids=["text", "digit-text", "two-shorts", "out-of-range"],
)
def test_an_odd_exif_orientation_is_planned_and_decoded_not_a_500(
    kind: int, count: int, inline: bytes
) -> None:
    """Files in the wild store Orientation as text or out of range; the plan must not raise a
    bare ValueError (a 500, and a whole /classify/batch lost) where the decode itself copes."""
    exif = _exif_with_orientation(kind, count, inline)
    data = encode(Image.new("RGB", (64, 48), (200, 30, 30)), "JPEG", exif=exif)
    plan = plan_decode(data, LIMIT, draft_to=32)
    assert (plan.width, plan.height) == (64, 48)
    assert preprocess(data, SPEC, LIMIT).shape == (SPEC.crop_size, SPEC.crop_size, 3)


def _plan(megabytes: int) -> DecodePlan:
    return DecodePlan(1, 1, "RGB", megabytes * MiB)


async def test_budget_queues_what_does_not_fit_and_refuses_what_never_will() -> None:
    budget = DecodeBudget(100 * MiB)
    with pytest.raises(ImageTooLarge, match="decode memory limit of 100 MiB"):
        await budget.acquire(_plan(101))
    await budget.acquire(_plan(60))
    second = asyncio.create_task(budget.acquire(_plan(60)))
    await asyncio.sleep(0.01)
    assert not second.done()  # waits: 120 MB would not fit
    await budget.acquire(_plan(30))  # first fit: a small one does not wait behind it
    budget.release(_plan(60))
    await asyncio.wait_for(second, 1)
    assert budget.free == 10 * MiB
    budget.release(_plan(60))
    budget.release(_plan(30))
    assert budget.free == budget.total


async def test_budget_lets_no_stream_of_small_images_starve_a_big_one() -> None:
    """First fit only while a waiter is young: once it has waited ``aging_s``, smaller images
    that would fit queue behind it instead of overtaking it until its request times out."""
    now = [0.0]
    budget = DecodeBudget(100 * MiB, aging_s=1.0, clock=lambda: now[0])
    await budget.acquire(_plan(50))
    big = asyncio.create_task(budget.acquire(_plan(80)))
    await asyncio.sleep(0.01)
    now[0] = 0.5
    await budget.acquire(_plan(30))  # the big one is young: first fit lets a small one by
    now[0] = 1.5
    small = asyncio.create_task(budget.acquire(_plan(10)))  # 20 MiB free, but it must wait
    await asyncio.sleep(0.01)
    assert not small.done() and not big.done()
    budget.release(_plan(50))  # 70 free: still not enough for the big one, nor its turn lost
    await asyncio.sleep(0.01)
    assert not small.done() and not big.done()
    budget.release(_plan(30))
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert budget.free == 10 * MiB


async def test_budget_waiter_cancelled_leaves_nothing_behind() -> None:
    budget = DecodeBudget(100 * MiB)
    await budget.acquire(_plan(90))
    waiter = asyncio.create_task(budget.acquire(_plan(50)))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(_plan(90))
    assert budget.free == budget.total


@pytest.fixture(scope="module")
def pool() -> Iterator[DecodePool]:
    limits = DecodeLimits(workers=1, timeout_s=5.0, memory_bytes=64 * MiB, max_pixels=10**9)
    pool = DecodePool(SPEC, limits)
    yield pool
    pool.close()


def test_worker_gives_the_same_bytes_as_in_process(pool: DecodePool, photo_bytes) -> None:
    for data in photo_bytes.values():
        assert np.array_equal(pool.run(data), preprocess(data, SPEC, LIMIT))


def test_worker_refusals_keep_their_status(pool: DecodePool) -> None:
    with pytest.raises(ServiceError) as caught:
        pool.run(b"\x89PNG\r\n\x1a\n truncated")
    assert (caught.value.status_code, caught.value.code) == (400, "bad_image")


def test_address_space_limit_turns_a_huge_decode_into_413(pool: DecodePool) -> None:
    """Each worker's RLIMIT_AS is what it maps at start + the budget + 256 MiB: an image of
    ~360 MB decoded fails to allocate, as a 413, and the worker goes on."""
    with pytest.raises(ServiceError) as caught:
        pool.run(flat_png(9500, 9500))
    assert (caught.value.status_code, caught.value.code) == (413, "image_too_large")
    assert pool.run(encode(Image.new("RGB", (300, 200), (1, 2, 3)), "PNG")).shape == (224, 224, 3)


def test_timeout_kills_and_replaces_the_worker() -> None:
    limits = DecodeLimits(workers=1, timeout_s=0.05, memory_bytes=256 * MiB, max_pixels=10**9)
    pool = DecodePool(SPEC, limits)
    try:
        first, slow = pool.pids, flat_png(7000, 7000)  # ~2 s of inflating and resizing
        started = time.monotonic()
        with pytest.raises(DecodeTooExpensive, match=r"over 0\.05 s"):
            pool.run(slow)
        assert time.monotonic() - started < 1.5  # killed, not waited for
        assert pool.pids != first
        small = encode(Image.new("RGB", (64, 64)), "PNG")
        assert pool.run(small).shape == (224, 224, 3)  # the replacement serves
    finally:
        pool.close()


def test_close_stops_a_decode_in_progress() -> None:
    limits = DecodeLimits(workers=1, timeout_s=60, memory_bytes=256 * MiB, max_pixels=10**9)
    pool = DecodePool(SPEC, limits)
    errors: list[BaseException] = []
    # 300 scans of 16 MP: several seconds even on a fast idle machine (a flat 36 MP PNG could
    # finish within the 0.3 s below and leave nothing to stop).
    slow = progressive("L", extra_scans=300, size=(4000, 4000))

    def decode() -> None:
        try:
            pool.run(slow)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=decode)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    pool.close()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 1.0
    assert isinstance(errors[0], NotReady), errors


def test_png_with_a_large_icc_profile_decodes() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "PNG", icc_profile=bytes(3 * MiB))
    from service.pipeline.decode.image import configure_pillow

    configure_pillow(LIMIT)
    assert preprocess(buffer.getvalue(), SPEC, LIMIT).shape == (224, 224, 3)


def test_shutdown_cuts_a_slow_decode_not_a_quick_one() -> None:
    """Once a shutdown has begun, each decode gets SHUTDOWN_DECODE_S instead of its budget:
    a quick one still finishes (the drain answers it), a slow one is cut with 503."""
    limits = DecodeLimits(workers=1, timeout_s=60, memory_bytes=512 * MiB, max_pixels=10**9)
    pool = DecodePool(SPEC, limits)
    try:
        # 606 scans of 25 MP: 15-30 s by machine, well past the cut (the pool itself makes no
        # structural checks)
        slow = progressive("L", extra_scans=600, size=(5000, 5000))
        pool.begin_shutdown()
        assert pool.run(encode(Image.new("RGB", (64, 64)), "PNG")).shape == (224, 224, 3)
        started = time.monotonic()
        with pytest.raises(NotReady):
            pool.run(slow)
        assert time.monotonic() - started < SHUTDOWN_DECODE_S + 1.0
    finally:
        pool.close()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "L"])
def test_strips_give_the_bytes_of_one_whole_conversion(mode: str) -> None:
    """to_model_input converts and resizes the kept region STRIP_ROWS rows at a time; both
    steps are row-local, so the result is that of converting the whole region at once."""
    from model_contract.pixels import (
        FILTER_SUPPORT,
        RESAMPLE,
        _reach,
        crop_box,
        to_model_input,
        to_rgb,
    )

    rng = np.random.default_rng(0)
    height, width = 3 * STRIP_ROWS + 17, 700
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        img = Image.fromarray(rgba, "RGBA").convert(mode)
    left, top, right, bottom = crop_box(width, height, SPEC)
    support, crop = FILTER_SUPPORT[SPEC.interpolation], SPEC.crop_size
    x0, x1 = _reach(left, right, (right - left) / crop, support, width)
    y0, y1 = _reach(top, bottom, (bottom - top) / crop, support, height)
    region, rows, resample = to_rgb(img.crop((x0, y0, x1, y1))), y1 - y0, RESAMPLE["bicubic"]
    across = region.resize((crop, rows), resample, box=(left - x0, 0, right - x0, rows))
    whole = across.resize((crop, crop), resample, box=(0, top - y0, crop, bottom - y0))
    assert np.array_equal(to_model_input(img, SPEC), np.asarray(whole))


def test_decode_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import load_settings
    from service.errors import StartupError

    monkeypatch.delenv("EFFICIENTNET_DECODE_MEMORY_MB", raising=False)
    monkeypatch.delenv("EFFICIENTNET_MAX_IMAGE_PIXELS", raising=False)
    monkeypatch.delenv("EFFICIENTNET_DECODE_TIMEOUT_S", raising=False)
    settings = load_settings()
    assert settings.decode_memory_bytes == 50_000_000 * 8  # follows the pixel limit
    assert settings.decode_timeout_s == 10.0
    monkeypatch.setenv("EFFICIENTNET_DECODE_MEMORY_MB", "100")
    assert load_settings().decode_memory_bytes == 100 * MiB
    monkeypatch.setenv("EFFICIENTNET_DECODE_TIMEOUT_S", "0")
    with pytest.raises(StartupError, match="EFFICIENTNET_DECODE_TIMEOUT_S"):
        load_settings()
