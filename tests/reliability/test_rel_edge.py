"""Hostile clients at the protocol edge, against the real ``python -m service``: huge
headers, pipelined floods that never read, trickled bodies, disconnects, batches larger than
the pipeline, clients that send their whole body before reading, half-closes. Each attacker gets
a prompt, clear 4xx (or its cost is bounded), and honest photos keep getting 200 meanwhile."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edge_helpers import (
    AnswerReader,
    Pusher,
    assert_honest_served,
    connect,
    metric,
    read_answer,
    read_until_closed,
    small_photo,
)
from live_server import Server, model_env, running_server

MiB = 1024 * 1024
MAX_QUEUE = 4
CAPACITY = MAX_QUEUE + 2 * 2 + 2  # + 2 inference workers x batch 2 + 2 preprocessing threads
MAX_UPLOAD = 1 * MiB
MAX_CONNECTIONS = 48
MAX_REQUESTS = 1000  # per connection: the default
GRACE_S = 2.0
REQUEST_TIMEOUT_S = 10.0
# How much the server's peak RSS may grow under an attack whose cost must be bounded. Without
# the bounds, each of these attacks took hundreds of MB.
RSS_BUDGET_MB = 64


@pytest.fixture(scope="module")
def edge(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = model_env(
        lite0_onnx,
        EFFICIENTNET_MAX_QUEUE=str(MAX_QUEUE),
        EFFICIENTNET_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        EFFICIENTNET_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        EFFICIENTNET_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
        EFFICIENTNET_BODY_RATE_GRACE_S=str(GRACE_S),
    )
    with running_server(env, tmp_path_factory.mktemp("edge") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def photo() -> bytes:
    return small_photo()


def _peak_growth_mb(server: Server, before_kb: int) -> float:
    return (server.hwm_kb() - before_kb) / 1024


# --- 4: header size and count ------------------------------------------------------------------


def test_huge_headers_get_431_at_once_and_cost_little(edge: Server, photo: bytes) -> None:
    """8 clients each sending a 24 MiB header line: each 431 within seconds (not after reading
    it all), the peak RSS barely moves, and honest uploads are served meanwhile."""
    edge.reset_peak()
    before = edge.rss_kb()
    line = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (24 * MiB) + b"\r\n\r\n"
    socks = [connect(edge) for _ in range(8)]
    pushers = [Pusher(s, line) for s in socks]
    for pusher in pushers:
        pusher.start()
    try:
        started = time.monotonic()
        answers = [read_answer(s, timeout_s=10) for s in socks]
        took = time.monotonic() - started
        honest = assert_honest_served(edge, photo)
    finally:
        for pusher, sock in zip(pushers, socks, strict=True):
            pusher.stop.set()
            sock.close()
    growth = _peak_growth_mb(edge, before)
    print(f"\nheaders: 8 x 24 MiB: answered in {took:.2f} s, RSS +{growth:.1f} MB, {honest}")
    assert [a.status for a in answers] == [431] * 8, [a.status for a in answers]
    body = json.loads(answers[0].body)
    assert body["error"]["code"] == "headers_too_large" and "32768" in body["error"]["message"]
    assert took < 5, f"431s took {took:.1f} s"
    assert growth < RSS_BUDGET_MB, f"peak RSS grew {growth:.0f} MB"


def test_too_many_header_fields_get_431(edge: Server) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(500))
    with connect(edge) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
        answer = read_answer(sock, timeout_s=5)
    assert answer.status == 431, answer
    assert "more than 100 request header fields" in json.loads(answer.body)["error"]["message"]
    # An ordinary request with a few dozen headers is untouched.
    headers = {f"X-Ok-{i}": "v" * 100 for i in range(40)}
    assert httpx.get(f"{edge.url}/healthz", headers=headers, timeout=10).status_code == 200


# --- 5: pipelined requests from a client that never reads ------------------------------------


def test_pipelined_flood_that_never_reads_is_bounded(edge: Server, photo: bytes) -> None:
    """6 connections push 4 MiB of pipelined GET /healthz each (120,000 requests) and never
    read. The server parses one request at a time per connection and reads no further until its
    answer is taken, so its memory stays flat; and it answers at most MAX_REQUESTS of them per
    connection before closing it, so honest uploads made *during* the flood are served promptly
    (without that bound every answer that fit in the clients' socket buffers was computed: 20 s
    of a busy event loop, honest uploads 5-7 s each)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    flood = request * (4 * MiB // len(request))
    edge.reset_peak()
    before = edge.rss_kb()
    socks = [connect(edge) for _ in range(6)]
    pushers = [Pusher(s, flood, chunk=64 * 1024) for s in socks]
    for pusher in pushers:
        pusher.start()
    try:
        time.sleep(0.2)  # the flood is under way
        honest = assert_honest_served(edge, photo)
        time.sleep(
            1
        )  # what the clients manage to send waits in socket buffers, then TCP stops them
        sent = [p.sent for p in pushers]
        answered = [read_until_closed(sock, timeout_s=30) for sock in socks]
    finally:
        for pusher, sock in zip(pushers, socks, strict=True):
            pusher.stop.set()
            sock.close()
    growth = _peak_growth_mb(edge, before)
    counts = [len(answers) for answers in answered]
    print(
        f"\npipelined: 6 x 4 MiB, sent {sent}, answered {counts}, peak RSS +{growth:.1f} MB, "
        f"honest {honest}"
    )
    # Without the bound, parsing these floods took the RSS up by ~140 MB per connection.
    assert growth < RSS_BUDGET_MB, f"peak RSS grew {growth:.0f} MB (sent {sent})"
    assert counts == [MAX_REQUESTS] * 6, counts
    for answers in answered:
        assert {a.status for a in answers} == {200}
        assert answers[-1].headers.get("connection") == "close"
    time.sleep(0.5)
    edge.assert_alive()


def test_a_connection_is_closed_after_its_request_limit_without_losing_an_answer(
    edge: Server,
) -> None:
    """A client that pipelines past EFFICIENTNET_MAX_REQUESTS_PER_CONNECTION and keeps sending
    gets every answer up to the limit, the last saying ``Connection: close``, then a clean FIN:
    the rest it sent is drained (a lingering close), not answered with a TCP reset that could
    destroy answers it has not read yet. Requests below the limit keep the connection open."""
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with connect(edge) as sock:
        sock.sendall(request * (MAX_REQUESTS - 1))
        reader = AnswerReader(sock)
        first = [reader.next(timeout_s=10) for _ in range(MAX_REQUESTS - 1)]
        assert all(a.headers.get("connection") != "close" for a in first)
        sock.sendall(request * 50)  # past the limit: one more answer, then the close
        time.sleep(0.2)
        sock.sendall(request * 50)  # still sending while the server closes
        rest = read_until_closed(sock, timeout_s=10, reader=reader)
    assert len(rest) == 1 and rest[0].status == 200, [a.status for a in rest]
    assert rest[0].headers.get("connection") == "close"


def test_pipelined_requests_from_a_client_that_reads_are_answered_in_order(
    edge: Server, photo: bytes
) -> None:
    """One at a time is still pipelining: every request in one write is answered, in order."""
    classify = (
        f"POST /classify?top_k=1 HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(photo)}\r\n\r\n"
    ).encode() + photo
    health = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    missing = b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n"
    with connect(edge) as sock:
        sock.sendall(health + classify + missing + classify + health)
        reader = AnswerReader(sock)
        answers = [reader.next(timeout_s=10) for _ in range(5)]
    assert [a.status for a in answers] == [200, 200, 404, 200, 200]
    assert json.loads(answers[1].body)["predictions"][0]["index"] in {281, 282, 285}
    assert json.loads(answers[4].body) == {"status": "ok"}


def test_refused_connections_do_not_log_a_line_each(edge: Server) -> None:
    """Past EFFICIENTNET_MAX_CONNECTIONS uvicorn answers 503; 300 refusals write a few lines,
    not 300 (75,240 before, under a pipelined flood)."""
    idle = [connect(edge) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # all accepted
        offset = len(edge.log_text())
        statuses = []
        for _ in range(300):
            with connect(edge, timeout_s=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                statuses.append(read_answer(sock, timeout_s=5).status)
    finally:
        for sock in idle:
            sock.close()
    assert statuses.count(503) >= 290, statuses
    time.sleep(0.5)
    lines = edge.log_text()[offset:].splitlines()
    refused = [line for line in lines if "concurrency limit" in line]
    assert len(refused) <= 5, lines[:20]
    time.sleep(0.5)
    assert httpx.get(f"{edge.url}/healthz", timeout=10).status_code == 200


# --- 6: slow bodies --------------------------------------------------------------------------


def _trickle(server: Server, results: list[tuple[int, float]]) -> None:
    """Declare a 1 MB body, send a byte every 0.5 s; record (status, seconds to the answer)."""
    started = time.monotonic()
    with connect(server) as sock:
        head = "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
        sock.sendall(f"{head}Content-Length: 1000000\r\n\r\n".encode())
        sock.settimeout(0.5)
        data = b""
        while time.monotonic() - started < REQUEST_TIMEOUT_S + 5 and b"\r\n" not in data:
            try:
                sock.sendall(b"\xff")
                data += sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
    status = int(data.split()[1]) if data.startswith(b"HTTP/1.1") else 0
    results.append((status, time.monotonic() - started))


def test_trickled_bodies_hold_no_slot_and_are_refused(edge: Server, photo: bytes) -> None:
    """More tricklers than the whole admission capacity: honest uploads still get 200 (a slot is
    taken only once a body is complete, and a reader that has fallen behind gives its place to
    a newcomer), and each trickler is refused within seconds (it sends ~2 bytes/s, under the
    240 bytes/s minimum after the grace period)."""
    results: list[tuple[int, float]] = []
    threads = [
        threading.Thread(target=_trickle, args=(edge, results), daemon=True)
        for _ in range(CAPACITY + 4)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every trickler has sent its headers and holds what it can
    honest = assert_honest_served(edge, photo)
    for thread in threads:
        thread.join(REQUEST_TIMEOUT_S + 10)
    print(f"\ntricklers: {sorted(results)}, honest {honest}")
    assert len(results) == len(threads)
    # 408 once behind (evicted for an honest newcomer, or under the minimum rate); those that
    # found no room at all were refused at the door (503 queue_full) before sending a byte.
    statuses = [status for status, _ in results]
    assert set(statuses) <= {408, 503} and statuses.count(408) >= CAPACITY, results
    slowest = max(seconds for _, seconds in results)
    assert slowest < GRACE_S + 4, f"a trickler was answered only after {slowest:.1f} s"


# --- 8: disconnects ----------------------------------------------------------------------------


def test_client_disconnects_are_499_one_line_no_traceback(edge: Server) -> None:
    before = httpx.get(f"{edge.url}/metrics", timeout=10).text
    offset = len(edge.log_text())
    count = 20
    for _ in range(count):
        with connect(edge) as sock:
            head = "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
            sock.sendall(f"{head}Content-Length: 500000\r\n\r\n".encode() + b"\xff" * 50_000)
            time.sleep(0.05)
    time.sleep(1.0)
    after = httpx.get(f"{edge.url}/metrics", timeout=10).text
    log = edge.log_text()[offset:]

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("efficientnet_requests_total", route="/classify", status="499") == count
    assert grew("efficientnet_requests_total", route="/classify", status="500") == 0
    assert grew("efficientnet_errors_total", code="internal_error") == 0
    assert grew("efficientnet_errors_total", code="client_closed_request") == count
    assert "Traceback" not in log, log[:3000]
    assert len(log.splitlines()) <= count, log[:3000]


# --- 10: a batch larger than the pipeline ------------------------------------------------------


def test_batch_larger_than_capacity_is_413_not_retry(edge: Server, photo: bytes) -> None:
    files = [("file", (f"{i}.jpg", photo, "image/jpeg")) for i in range(CAPACITY + 1)]
    with httpx.Client(base_url=edge.url, timeout=30) as client:
        too_many = client.post("/classify/batch", files=files)
        fits = client.post("/classify/batch", files=files[:CAPACITY])
    assert too_many.status_code == 413, (too_many.status_code, too_many.text)
    assert "retry-after" not in too_many.headers
    error = too_many.json()["error"]
    assert error["code"] == "too_many_images" and f"at most {CAPACITY}" in error["message"]
    assert fits.status_code == 200, fits.text
    assert [r["status_code"] for r in fits.json()["results"]] == [200] * CAPACITY


# --- 11: clients that send the whole body before reading ---------------------------------------


def test_urllib_sees_the_413_for_an_oversized_upload(edge: Server, photo: bytes) -> None:
    """urllib writes the whole body before reading: the lingering close keeps reading (and
    dropping) it, so urllib gets the 413 instead of a broken pipe."""
    body = b"\xff" * (8 * MAX_UPLOAD)
    request = urllib.request.Request(
        f"{edge.url}/classify", data=body, headers={"Content-Type": "image/jpeg"}
    )
    started = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    print(f"\nurllib: 8 MiB upload, 413 after {time.monotonic() - started:.2f} s")
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == "payload_too_large"
    assert time.monotonic() - started < 10
    assert_honest_served(edge, photo, count=1)


# --- 12: half-close, HEAD --------------------------------------------------------------------


def test_request_then_half_close_gets_its_answer(edge: Server, photo: bytes) -> None:
    head = "POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
    requests = [
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        f"{head}Content-Length: {len(photo)}\r\n\r\n".encode() + photo,
    ]
    for request in requests:
        with connect(edge) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)  # valid HTTP: the client has nothing more to send
            answer = read_answer(sock, timeout_s=10)
            assert answer.status == 200, answer
            sock.settimeout(5)
            assert sock.recv(1) == b""  # and then the server closes
    body = json.loads(answer.body)
    assert body["predictions"][0]["index"] in {281, 282, 285}  # tabby, tiger cat, Egyptian cat


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"])
def test_head_on_health_routes(edge: Server, path: str) -> None:
    response = httpx.head(f"{edge.url}{path}", timeout=10)
    assert response.status_code == 200, response
    assert response.content == b""
