"""Hostile request bodies over raw sockets: oversized bodies are refused while streaming (never
buffered whole) and uploads that trickle time out without holding up anyone else."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from live_server import Server, model_env, running_server
from reliability_helpers import REQUEST_TIMEOUT_S

MiB = 1024 * 1024
MAX_UPLOAD = 1 * MiB
BODY_TIMEOUT_S = 2.0
HUGE = 256 * MiB  # what the client would send if nobody stopped it
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def strict(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(
        lite0_onnx,
        EFFICIENTNET_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        EFFICIENTNET_REQUEST_TIMEOUT_S=str(BODY_TIMEOUT_S),
    )
    with running_server(env, tmp_path_factory.mktemp("strict") / "server.log") as server:
        yield server


@dataclass
class RawExchange:
    """One HTTP/1.1 request written by hand, its body sent from a thread as the test says."""

    server: Server
    head: str
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    send_error: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.server.url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.sendall(self.head.encode("latin-1"))

    def send_body(self, chunks: Iterator[bytes], pause_s: float = 0.0) -> threading.Thread:
        def pump() -> None:
            try:
                for chunk in chunks:
                    if self.stop.is_set():
                        return
                    self.sock.sendall(chunk)
                    self.sent += len(chunk)
                    if pause_s:
                        time.sleep(pause_s)
            except OSError as exc:  # the server closed on us: what a refusal looks like
                self.send_error = type(exc).__name__

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        return thread

    def read_response(self, timeout_s: float) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) of the response, however the body is framed."""
        self.sock.settimeout(timeout_s)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            rest += self._recv()
        self.stop.set()
        return int(lines[0].split()[1]), headers, json.loads(rest[:length])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed without a response")
        return chunk

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _head(path: str, *headers: str) -> str:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: test", *headers, "", ""])


MULTIPART_PREFIX = (
    b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)


def _chunked(total: int, prefix: bytes) -> Iterator[bytes]:
    """Chunked transfer coding of ``prefix`` + a JPEG-looking start + zeros, ``total`` bytes."""
    payload = prefix + b"\xff\xd8\xff" + b"\x00" * (CHUNK - 3 - len(prefix))
    for _ in range(total // CHUNK):
        yield f"{CHUNK:x}\r\n".encode() + payload + b"\r\n"
        payload = b"\x00" * CHUNK
    yield b"0\r\n\r\n"


@pytest.mark.parametrize(
    "path,content_type",
    [
        ("/classify", "image/jpeg"),
        ("/classify", "multipart/form-data; boundary=x"),
        ("/classify/batch", "multipart/form-data; boundary=x"),
    ],
)
def test_chunked_body_over_limit_refused_while_streaming(
    strict: Server, path: str, content_type: str
) -> None:
    """256 MiB sent chunked (no Content-Length to refuse up front): 413 once the count passes
    1 MiB; the server neither reads nor holds the rest."""
    head = _head(path, f"Content-Type: {content_type}", "Transfer-Encoding: chunked")
    strict.reset_peak()
    before = strict.rss_kb()
    exchange = RawExchange(strict, head)
    try:
        prefix = MULTIPART_PREFIX if content_type.startswith("multipart") else b""
        pump = exchange.send_body(_chunked(HUGE, prefix))
        started = time.monotonic()
        status, headers, body = exchange.read_response(timeout_s=30)
        answered_s = time.monotonic() - started
        sent_at_answer = exchange.sent
        pump.join(10)
    finally:
        exchange.close()
    growth = strict.hwm_kb() - before
    print(
        f"{path} {content_type}: 413 after {sent_at_answer / MiB:.1f} MiB sent in "
        f"{answered_s:.2f} s; server peak RSS +{growth / 1024:.1f} MiB"
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large", body
    assert headers.get("connection") == "close"
    # Refused early: a few socket buffers past the limit, nowhere near the 256 MiB.
    assert sent_at_answer < 32 * MiB, sent_at_answer
    assert exchange.sent < 64 * MiB, "the server kept reading after it answered"
    assert growth < 24 * 1024, f"server peak RSS grew {growth} kB"
    strict.assert_alive()


def test_declared_length_over_limit_refused_before_body(strict: Server) -> None:
    """A Content-Length of 10 GiB is refused from the headers alone; no body byte is sent."""
    exchange = RawExchange(
        strict, _head("/classify", "Content-Type: image/png", f"Content-Length: {10 * 1024**3}")
    )
    try:
        status, _, body = exchange.read_response(timeout_s=10)
    finally:
        exchange.close()
    assert status == 413 and body["error"]["code"] == "payload_too_large", body
    assert exchange.sent == 0


def _trickle(total: int, step: int) -> Iterator[bytes]:
    yield b"\xff\xd8\xff\xe0"
    for _ in range((total - 4) // step):
        yield b"\x00" * step


@pytest.mark.parametrize("path", ["/classify", "/classify/batch"])
def test_trickled_upload_times_out_without_blocking_others(
    strict: Server, photos: dict, path: str
) -> None:
    """A client sending 100 bytes every 0.25 s of a 100 kB body gets 408 after the request
    timeout, and a normal request made meanwhile is answered promptly."""
    total = 100_000
    if path == "/classify":
        head = _head(path, "Content-Type: image/jpeg", f"Content-Length: {total}")
        chunks = _trickle(total, 100)
    else:
        head = _head(
            path, "Content-Type: multipart/form-data; boundary=x", f"Content-Length: {total}"
        )
        chunks = iter([MULTIPART_PREFIX, *_trickle(total - len(MULTIPART_PREFIX), 100)])
    cat = photos["chelsea"].path.read_bytes()
    exchange = RawExchange(strict, head)
    try:
        started = time.monotonic()
        exchange.send_body(chunks, pause_s=0.25)
        time.sleep(0.5)  # the slow upload is well under way
        normal = httpx.post(f"{strict.url}/classify", content=cat, timeout=10)
        normal_s = normal.elapsed.total_seconds()
        status, _, body = exchange.read_response(timeout_s=BODY_TIMEOUT_S + 10)
        slow_s = time.monotonic() - started
    finally:
        exchange.close()
    print(
        f"{path}: trickling client answered {status} after {slow_s:.2f} s "
        f"({exchange.sent} bytes sent); concurrent normal request {normal_s * 1000:.0f} ms"
    )
    assert normal.status_code == 200, normal.text
    assert normal.json()["predictions"][0]["index"] in photos["chelsea"].expected
    assert normal_s < 2.0, normal_s
    assert status == 408 and body["error"]["code"] == "body_timeout", body
    assert BODY_TIMEOUT_S - 0.5 < slow_s < BODY_TIMEOUT_S + 3, slow_s
    assert exchange.sent < total  # it was cut off, not allowed to finish
    strict.assert_alive()


def test_slow_headers_are_timed_out(served: Server) -> None:
    """A client that trickles its request headers (slowloris) held its connection forever:
    uvicorn has no header-read timeout and the request timeout starts only once the app reads
    the body. The service's protocol (service/edge/) closes it within the request timeout."""
    host, port = served.url.removeprefix("http://").split(":")
    limit_s = REQUEST_TIMEOUT_S + 5
    reacted = False
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(0.5)
        started = time.monotonic()
        for byte in b"POST /classify HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200:
            if time.monotonic() - started > limit_s:
                break
            try:
                sock.sendall(bytes([byte]))
                sock.recv(1024)  # any answer, or EOF, is the server reacting
                reacted = True
                break
            except TimeoutError:
                continue  # nothing yet: send the next byte
            except OSError:  # reset: the server closed on us
                reacted = True
                break
    assert reacted, f"connection with unfinished headers still open after {limit_s} s"
