"""X-Request-ID in-process: which caller ids are kept, and the id on answers the live tests
(tests/operate/test_request_id.py) cannot provoke: an unhandled error's 500, the 503 before the
model is ready, a batch's per-file errors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from service_helpers import assert_error, settings_for

from service.app import create_app
from service.request_id import MAX_LENGTH, request_id_from

session_loop = pytest.mark.asyncio(loop_scope="session")  # the shared in-process app's loop

NEW_ID = re.compile(r"[0-9a-f]{32}")
JPEG = {"content-type": "image/jpeg"}


def _headers(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"t"), (b"x-request-id", value)]


@pytest.mark.parametrize(
    "value",
    [
        b"4bf92f3577b34da6a3ce929d0e0e4736",
        b"01HV6BGKJ8X9Q2W3E4R5T6Y7U8",  # a ULID
        b"req-42_a.b:c=d+e/f@g",
        b"a" * MAX_LENGTH,
    ],
)
def test_a_sane_caller_id_is_kept(value: bytes) -> None:
    assert request_id_from(_headers(value)) == value.decode()


@pytest.mark.parametrize(
    "value",
    [
        b"a" * (MAX_LENGTH + 1),  # too long
        b"abc\x01def",  # a control character
        b"abc\x7fdef",
        "café".encode(),  # non-ASCII
        b"\xff\xfe",
        b"a b",  # a space would split a log line's fields
        b'a"b',
        b"a%sb",
        b"",
    ],
)
def test_an_insane_caller_id_is_replaced_never_echoed(value: bytes) -> None:
    chosen = request_id_from(_headers(value))
    assert NEW_ID.fullmatch(chosen), chosen


def test_without_a_caller_id_each_request_gets_a_new_one() -> None:
    ids = {request_id_from([(b"host", b"t")]) for _ in range(100)}
    assert len(ids) == 100 and all(NEW_ID.fullmatch(i) for i in ids)


def test_the_first_of_several_caller_ids_decides() -> None:
    headers = [(b"x-request-id", b"first"), (b"x-request-id", b"second")]
    assert request_id_from(headers) == "first"
    assert NEW_ID.fullmatch(request_id_from([(b"x-request-id", b"a b"), *headers]))


@session_loop
async def test_success_and_batch_errors_carry_the_callers_id(
    lite0: httpx.AsyncClient, photo_bytes: dict[str, bytes]
) -> None:
    ok = await lite0.post(
        "/classify", content=photo_bytes["chelsea"], headers={**JPEG, "X-Request-ID": "ok-1"}
    )
    assert ok.status_code == 200 and ok.headers.get_list("x-request-id") == ["ok-1"]
    files = [("file", ("cat.jpg", photo_bytes["chelsea"])), ("file", ("bad.jpg", b"nope"))]
    batch = await lite0.post("/classify/batch", files=files, headers={"X-Request-ID": "batch-1"})
    assert batch.status_code == 200 and batch.headers["x-request-id"] == "batch-1"
    bad = batch.json()["results"][1]
    assert bad["status_code"] == 415 and bad["error"]["request_id"] == "batch-1", bad


@session_loop
async def test_an_unhandled_errors_500_carries_the_id(lite0_onnx: Path) -> None:
    """Starlette answers an unhandled error outside the app's middleware: the renderer puts the
    id on it itself."""
    app = create_app(settings_for(lite0_onnx))

    async def fail() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/fail", fail)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        mine = await client.get("/fail", headers={"X-Request-ID": "bug-7"})
        new = await client.get("/fail", headers={"X-Request-ID": "bad id"})
    assert assert_error(mine, 500, "internal_error")["request_id"] == "bug-7"
    assert mine.headers.get_list("x-request-id") == ["bug-7"]
    assert NEW_ID.fullmatch(assert_error(new, 500, "internal_error")["request_id"])


@session_loop
async def test_the_503_before_the_model_is_ready_carries_the_id(
    lite0_onnx: Path, photo_bytes: dict[str, bytes]
) -> None:
    app = create_app(settings_for(lite0_onnx))  # lifespan not run: not ready
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.post(
            "/classify", content=photo_bytes["chelsea"], headers={**JPEG, "X-Request-ID": "w-1"}
        )
    assert assert_error(response, 503, "not_ready")["request_id"] == "w-1"
    assert response.headers.get_list("x-request-id") == ["w-1"]


@session_loop
async def test_the_openapi_schema_describes_the_header_and_the_body_field(
    lite0: httpx.AsyncClient,
) -> None:
    schema = (await lite0.get("/openapi.json")).json()
    header = schema["components"]["headers"]["X-Request-ID"]
    pattern = re.compile(header["schema"]["pattern"])
    assert pattern.search("caller-1.a:b") and not pattern.search("a b")
    assert not pattern.search("a" * (MAX_LENGTH + 1))
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                assert "X-Request-ID" in response.get("headers", {}), (path, method, status)
    error = schema["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "request_id"}
