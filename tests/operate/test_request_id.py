"""X-Request-ID on the real ``python -m service``: on every answer, the app's and the edge's own
(413, 431, a malformed request's 400, uvicorn's 503 past the connection limit), in the JSON error
body and in the access log line; a caller's sane id is kept, anything else replaced."""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from live_server import Server, model_env, running_server
from photos import Photo

MiB = 1024 * 1024
MAX_CONNECTIONS = 8
NEW_ID = re.compile(r"[0-9a-f]{32}")
INFER = "/v2/models/efficientnet_lite0/infer"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(
        lite0_onnx,
        EFFICIENTNET_MAX_UPLOAD_BYTES=str(MiB),
        EFFICIENTNET_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    log = tmp_path_factory.mktemp("request-id") / "server.log"
    with running_server(env, log, "--access-log") as server:
        yield server


@pytest.fixture(scope="module")
def cat(photos: dict[str, Photo]) -> bytes:
    return photos["chelsea"].path.read_bytes()


def _requests(cat: bytes) -> list[tuple[str, str, dict[str, Any], int]]:
    """(method, path, httpx arguments, status): a success and each kind of refusal."""
    jpeg, text = {"content-type": "image/jpeg"}, {"content-type": "text/plain"}
    encoded = base64.b64encode(cat).decode()
    infer = {"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES",
                         "data": [encoded]}]}  # fmt: skip
    return [
        ("POST", "/classify", {"content": cat, "headers": jpeg}, 200),
        ("GET", "/no/such/path", {}, 404),
        ("POST", "/classify", {"content": b"x" * (2 * MiB), "headers": jpeg}, 413),  # the edge's
        ("POST", "/classify", {"content": b"hello", "headers": text}, 415),
        ("POST", "/classify?top_k=0", {"content": cat, "headers": jpeg}, 422),
        ("POST", INFER, {"json": infer}, 200),
        ("POST", "/v2/models/no_such_model/infer", {"json": infer}, 404),
    ]


def _send(server: Server, method: str, path: str, args: dict[str, Any], request_id: str | None):
    headers = {**args.get("headers", {})}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    arguments = {**args, "headers": headers}
    return httpx.request(method, f"{server.url}{path}", timeout=30, **arguments)


def _body_id(response: httpx.Response) -> str | None:
    """The error body's request id: the service's shape has it, the protocol's (/v2) has not."""
    if response.status_code < 400:
        return None
    error = response.json()["error"]
    if response.url.path.startswith("/v2/"):
        assert isinstance(error, str), error
        return None
    return error["request_id"]


def test_every_answer_carries_the_callers_sane_id(server: Server, cat: bytes) -> None:
    for i, (method, path, args, status) in enumerate(_requests(cat)):
        sent = f"caller-{i}.{status}_a:b"
        response = _send(server, method, path, args, sent)
        assert response.status_code == status, (path, response.text[:300])
        assert response.headers.get_list("x-request-id") == [sent], (path, response.headers)
        assert _body_id(response) in (None, sent), (path, response.text)


def test_without_an_id_every_answer_gets_a_new_one(server: Server, cat: bytes) -> None:
    seen = set()
    for method, path, args, status in _requests(cat):
        response = _send(server, method, path, args, None)
        assert response.status_code == status, (path, response.text[:300])
        chosen = response.headers["x-request-id"]
        assert NEW_ID.fullmatch(chosen), (path, chosen)
        assert _body_id(response) in (None, chosen), (path, response.text)
        seen.add(chosen)
    assert len(seen) == len(_requests(cat))


def _exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One raw request on its own connection (bytes no client library would send), and the
    answer: status, headers (lower-case names, the last of each), body."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split()[1]), headers, body


def _get(value: bytes, path: bytes = b"/no/such/path") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Request-ID: %s\r\n\r\n" % (
        path,
        value,
    )


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (b"a" * 129, 404),  # too long
        ("naïve-ümlaut".encode(), 404),  # non-ASCII
        (b"two words", 404),
        (b'quote"d', 404),
        (b"ctl\x01char", 400),  # a control character: the parser refuses the request itself
    ],
)
def test_an_insane_id_is_replaced_never_echoed(server: Server, value: bytes, status: int) -> None:
    got, headers, body = _exchange(server, _get(value))
    assert got == status, body
    assert NEW_ID.fullmatch(headers["x-request-id"]), headers
    assert value not in body
    assert orjson.loads(body)["error"]["request_id"] == headers["x-request-id"]


def test_the_edges_own_refusals_carry_an_id(server: Server) -> None:
    # 431 for too many fields: those parsed before the limit were read, the caller's id too.
    many = b"".join(b"X-Field-%d: v\r\n" % i for i in range(150))
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-ID: edge-431\r\n" + many + b"\r\n"
    status, headers, body = _exchange(server, head)
    assert status == 431 and headers["x-request-id"] == "edge-431", (status, headers)
    assert orjson.loads(body)["error"] == {
        "code": "headers_too_large",
        "message": "more than 100 request header fields",
        "request_id": "edge-431",
    }
    # 431 for a head over the byte limit: never parsed, so a new id.
    huge = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n"
    status, headers, body = _exchange(server, huge)
    assert status == 431 and NEW_ID.fullmatch(headers["x-request-id"]), (status, headers)
    assert orjson.loads(body)["error"]["request_id"] == headers["x-request-id"]


def test_uvicorns_503_past_the_connection_limit_carries_the_id(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # all accepted
        status, headers, body = _exchange(server, _get(b"edge-503", b"/healthz"))
    finally:
        for sock in idle:
            sock.close()
    assert status == 503, body
    assert headers["x-request-id"] == "edge-503", headers


def test_the_access_log_line_names_the_request(server: Server, cat: bytes) -> None:
    offset = len(server.log_text())
    jpeg = {"content-type": "image/jpeg"}
    ok = _send(server, "POST", "/classify", {"content": cat, "headers": jpeg}, "log-ok-1")
    missing = _send(server, "GET", "/no/such/path", {}, None)
    too_big = {"content": b"x" * (2 * MiB), "headers": jpeg}
    refused = _send(server, "POST", "/classify", too_big, "log-413-1")
    assert (ok.status_code, missing.status_code, refused.status_code) == (200, 404, 413)
    time.sleep(0.5)  # let the server write its lines
    lines = server.log_text()[offset:].splitlines()
    for status, request_id, request_line in [
        (200, "log-ok-1", "POST /classify HTTP/1.1"),
        (404, missing.headers["x-request-id"], "GET /no/such/path HTTP/1.1"),
        (413, "log-413-1", "POST /classify HTTP/1.1"),
    ]:
        line = [line for line in lines if line.endswith(f" request_id={request_id}")]
        assert len(line) == 1, lines
        assert f'"{request_line}" {status}' in line[0], line
