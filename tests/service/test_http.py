"""Over real HTTP on loopback (uvicorn in a thread): 64 concurrent requests with dynamic batching,
body limits enforced while streaming, slow uploads, a full queue, decompression bombs."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from service_helpers import assert_error, live_server, metric_value, scores, settings_for, top1
from test_preprocess import png_header

pytestmark = pytest.mark.asyncio(loop_scope="session")
JPEG = {"content-type": "image/jpeg"}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def batching_url(lite0_onnx: Path) -> Iterator[str]:
    """Lite0 with the service's default CPU batching policy."""
    with live_server(settings_for(lite0_onnx)) as url:
        yield url


@pytest.fixture(scope="module")
def strict_url(lite0_onnx: Path) -> Iterator[str]:
    """Tight limits: 1 MiB bodies, 1 megapixel, a queue of 1, a 1.5 s timeout."""
    settings = settings_for(
        lite0_onnx,
        max_upload_bytes=MiB,
        max_image_pixels=1_000_000,
        max_queue=1,
        max_batch_size=1,
        request_timeout_s=1.5,
    )
    with live_server(settings) as url:
        yield url


async def test_64_concurrent_requests_all_correct_and_batched(
    batching_url: str, photos: dict[str, Any]
) -> None:
    names = list(photos) * 16
    async with httpx.AsyncClient(base_url=batching_url, timeout=60) as client:
        before = (await client.get("/metrics")).text
        responses = await asyncio.gather(
            *(
                client.post("/classify", content=photos[n].path.read_bytes(), headers=JPEG)
                for n in names
            )
        )
        after = (await client.get("/metrics")).text
    assert len(responses) == 64
    for name, response in zip(names, responses, strict=True):
        assert top1(response) in photos[name].expected, name
    sizes = [r.json()["timing_ms"]["batch_size"] for r in responses]
    assert max(sizes) > 1, "concurrent requests should have shared batches"
    runs = metric_value(after, "efficientnet_batch_size_count") - metric_value(
        before, "efficientnet_batch_size_count"
    )
    images = metric_value(after, "efficientnet_batch_size_sum") - metric_value(
        before, "efficientnet_batch_size_sum"
    )
    assert images == 64 and runs < 64


async def test_batched_answers_equal_single_answers(
    b0_random_onnx: Path, photos: dict[str, Any]
) -> None:
    """Random-weights B0: a request's scores do not depend on who shared its batch."""
    settings = settings_for(b0_random_onnx, max_batch_size=16, max_batch_delay_ms=20)
    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            data = {n: p.path.read_bytes() for n, p in photos.items()}
            alone = {
                n: scores(await client.post("/classify", content=d, headers=JPEG))
                for n, d in data.items()
            }
            names = list(data) * 8
            together = await asyncio.gather(
                *(client.post("/classify", content=data[n], headers=JPEG) for n in names)
            )
    assert max(r.json()["timing_ms"]["batch_size"] for r in together) > 1
    for name, response in zip(names, together, strict=True):
        got = scores(response)
        assert list(got) == list(alone[name])
        assert all(abs(got[k] - alone[name][k]) < 1e-5 for k in got)


async def _raw_exchange(
    url: str, head: bytes, body_chunks: Iterator[bytes], pause_s: float = 0.0
) -> tuple[bytes, int]:
    """Send a request by hand, stop as soon as the server answers; -> (answer, bytes sent)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    answer = asyncio.create_task(reader.read(65536))
    sent = 0
    try:
        writer.write(head)
        for chunk in body_chunks:
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(pause_s)
        data = await asyncio.wait_for(answer, 10)
    except ConnectionError:  # the server closed on us mid-body, after answering
        data = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
    return data, sent


def _head(url: str, extra: str) -> bytes:
    host = urlsplit(url).netloc
    head = f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n{extra}\r\n"
    return head.encode()


async def test_declared_oversize_rejected_before_reading(strict_url: str) -> None:
    data, sent = await _raw_exchange(
        strict_url, _head(strict_url, f"Content-Length: {100 * MiB}\r\n"), iter(())
    )
    assert data.startswith(b"HTTP/1.1 413") and b'"payload_too_large"' in data
    assert sent == 0


async def test_streamed_oversize_rejected_while_streaming(strict_url: str) -> None:
    chunk = b"\xff" * (64 * 1024)
    total = 64 * MiB  # what the client would send if the server let it

    def chunked() -> Iterator[bytes]:
        for _ in range(total // len(chunk)):
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    data, sent = await _raw_exchange(
        strict_url, _head(strict_url, "Transfer-Encoding: chunked\r\n"), chunked()
    )
    assert data.startswith(b"HTTP/1.1 413") and b'"payload_too_large"' in data
    assert sent < 8 * MiB, f"the server let {sent} bytes in before refusing"


async def test_streamed_oversize_on_v2_answers_in_the_protocol_shape_counted_once(
    strict_url: str,
) -> None:
    """The 413 raised mid-stream inside a /v2 route is answered by that route's own handler
    (the protocol's ``{"error": "..."}``) and counted once, not replaced by the middleware."""
    chunk = b"\xff" * (64 * 1024)

    def chunked() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB, over the 1 MiB limit
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    def errors_413(text: str) -> float:
        return metric_value(text, "efficientnet_errors_total", {"code": "payload_too_large"})

    async with httpx.AsyncClient(base_url=strict_url, timeout=10) as client:
        before = errors_413((await client.get("/metrics")).text)
        host = urlsplit(strict_url).netloc
        head = (
            f"POST /v2/models/efficientnet_lite0/infer HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        data, _ = await _raw_exchange(strict_url, head, chunked())
        after = errors_413((await client.get("/metrics")).text)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    body = orjson.loads(data.split(b"\r\n\r\n", 1)[1])
    assert isinstance(body["error"], str) and "limit" in body["error"], body
    assert after - before == 1


async def test_slow_upload_times_out_without_blocking_others(
    strict_url: str, photos: dict[str, Any]
) -> None:
    trickle = iter([b"x"] * 100)  # one byte per 50 ms: 5 s, past the 1.5 s timeout
    head = _head(strict_url, "Content-Length: 100000\r\n")
    slow = asyncio.create_task(_raw_exchange(strict_url, head, trickle, pause_s=0.05))
    async with httpx.AsyncClient(base_url=strict_url, timeout=10) as client:
        response = await client.post(
            "/classify", content=photos["coffee"].path.read_bytes(), headers=JPEG
        )
        assert top1(response) in photos["coffee"].expected
    data, _ = await slow
    assert data.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in data


async def test_full_queue_answers_503_with_retry_after(
    strict_url: str, photos: dict[str, Any]
) -> None:
    data = photos["chelsea"].path.read_bytes()
    async with httpx.AsyncClient(base_url=strict_url, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/classify", content=data, headers=JPEG) for _ in range(32))
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}
        assert 200 in statuses and 503 in statuses, statuses
        for response in responses:
            if response.status_code == 503:
                assert_error(response, 503, "queue_full")
                assert response.headers["retry-after"] == "1"
        assert (
            top1(await client.post("/classify", content=data, headers=JPEG))
            in photos["chelsea"].expected
        )


def jpeg_header(width: int, height: int) -> bytes:
    sof = (
        b"\xff\xc0"
        + struct.pack(">HBHHB", 17, 8, height, width, 3)
        + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 64 + b"\xff\xd9"


def gif_header(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + b"," + frame + b"\x02\x02\x44\x01\x00;"


@pytest.mark.parametrize(
    "bomb",
    [
        png_header(30000, 30000),
        jpeg_header(65000, 65000),
        gif_header(65535, 65535),
        png_header(1001, 1000),
    ],
    ids=["png-30000", "jpeg-65000", "gif-65535", "png-just-over"],
)
async def test_decompression_bombs_refused_from_the_header(strict_url: str, bomb: bytes) -> None:
    assert len(bomb) < 1000
    async with httpx.AsyncClient(base_url=strict_url, timeout=10) as client:
        assert_error(
            await client.post("/classify", content=bomb, headers=JPEG), 413, "image_too_large"
        )
        assert (await client.get("/healthz")).status_code == 200
