"""What the reliability tests share: the answer contract and a raw HTTP client (the server
process itself comes from ``tests/live_server.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

# The shared server's EFFICIENTNET_REQUEST_TIMEOUT_S: short enough that a hang fails the suite
# quickly, long enough for a loaded 2-core CI machine.
REQUEST_TIMEOUT_S = 10
API_KEY = "reliability-test-key"
# Statuses an upload may get; anything else (5xx above all) is a failure.
# 422: too costly to decode (a JPEG of too many scans, a decode past its time budget) or a
# decoder crash contained in its worker (service/pipeline/decode/workers.py).
UPLOAD_ERRORS = {400, 413, 415, 422}
ERROR_CODES = {
    "bad_image",
    "empty_body",
    "unsupported_media_type",
    "image_too_large",
    "decode_too_expensive",
    "decode_failed",
}


def assert_error_shape(response: httpx.Response, statuses: set[int] | None = None) -> str:
    """The service's one error shape; returns the error code."""
    allowed = statuses or UPLOAD_ERRORS
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "request_id"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
    # The body names the request the answer's header names.
    assert body["error"]["request_id"] == response.headers["x-request-id"], body
    return body["error"]["code"]


def assert_classification(body: dict[str, Any], top_k: int, classes: int = 1000) -> None:
    """A well-formed 200: top_k distinct classes, probabilities sorted descending."""
    predictions = body["predictions"]
    assert len(predictions) == min(top_k, classes), body
    indices = [p["index"] for p in predictions]
    assert len(set(indices)) == len(indices) and all(0 <= i < classes for i in indices)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True), scores
    assert all(0.0 <= s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-5, scores
    assert all(isinstance(p["label"], str) and p["label"] for p in predictions)
    assert body["timing_ms"]["batch_size"] >= 1


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # connect → last byte


async def raw_request(
    url: str, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> RawResponse:
    """One HTTP/1.1 request on its own connection with asyncio streams.

    A burst of hundreds of these costs the client little CPU, so on a 2-core machine the
    latencies measured are the server's, not an HTTP client library's.
    """
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
    lines += ["Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + body)
    await writer.drain()
    data = await reader.read()  # Connection: close → the server ends the response with EOF
    writer.close()
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return RawResponse(int(status_line.split()[1]), parsed, content, time.monotonic() - started)
