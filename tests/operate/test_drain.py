"""Readiness that means ready, and a drain that drops nothing, against the real process: under
load, SIGTERM turns /readyz to 503 at once while requests are still served for
EFFICIENTNET_DRAIN_DELAY_S, then every accepted request is answered and the process exits 0
within what the Kubernetes manifest gives it. A decode worker killed while idle is replaced by
the next probe, not left for an upload to find."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from live_server import READY_DROP_S, ROOT, model_env, running_server, start_server
from photos import Photo

pytestmark = pytest.mark.slow

DRAIN_DELAY_S = 2.0
CLIENTS = 6


@dataclass
class Log:
    """(sent at, status or 0 for a failed connection) per request, from every thread."""

    requests: list[tuple[float, int]] = field(default_factory=list)
    probes: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, into: list[tuple[float, int]], sent: float, status: int) -> None:
        with self.lock:
            into.append((sent, status))


def _client(url: str, body: bytes, stop: threading.Event, log: Log) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = client.post("/classify", files={"file": body}).status_code
            except httpx.HTTPError:
                status = 0
            log.add(log.requests, sent, status)
            if status == 0:
                time.sleep(0.05)


def _probe(port: int) -> int:
    """GET /readyz on a new connection, as the kubelet makes them (a raw socket: httpx's
    per-call client costs ~0.2 s of set-up on a loaded 2-core machine); 0 if refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            return int(sock.recv(64).split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return 0


def _prober(port: int, stop: threading.Event, log: Log) -> None:
    while not stop.is_set():
        sent = time.monotonic()
        log.add(log.probes, sent, _probe(port))
        time.sleep(0.01)


def _grace_left_s() -> float:
    """What the manifest leaves the process after its preStop hook: SIGTERM comes then."""
    deployment = yaml.safe_load((ROOT / "deploy/k8s/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if "preStop" in c.get("lifecycle", {})]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    return pod["terminationGracePeriodSeconds"] - pre_stop


def test_sigterm_under_load_unready_at_once_answers_everything_and_exits_0(
    lite0_onnx: Path, tmp_path: Path, photos: dict[str, Photo]
) -> None:
    env = model_env(lite0_onnx, EFFICIENTNET_DRAIN_DELAY_S=str(DRAIN_DELAY_S))
    server = start_server(env, tmp_path / "server.log")
    body = photos["chelsea"].path.read_bytes()
    log, stop = Log(), threading.Event()
    threads = [
        threading.Thread(target=_client, args=(server.url, body, stop, log)) for _ in range(CLIENTS)
    ]
    threads.append(threading.Thread(target=_prober, args=(urlsplit(server.url).port, stop, log)))
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)  # steady load
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(60)
        exited_s = time.monotonic() - signalled
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        if server.process.poll() is None:
            server.process.kill()
    before = [s for t, s in log.requests if t < signalled]
    during = [s for t, s in log.requests if signalled <= t < signalled + DRAIN_DELAY_S - 0.2]
    failed = [(round(t - signalled, 3), s) for t, s in log.requests if s not in (0, 200)]
    probes = [(round(t - signalled, 3), s) for t, s in log.probes if t >= signalled]
    print(
        f"{len(before)} requests before SIGTERM, {len(during)} during the drain delay, "
        f"exit {code} after {exited_s:.2f} s; probes after the signal: {probes[:8]}"
    )
    assert before and all(s == 200 for s in before)
    # Still served while not ready: the port stays open for the delay.
    assert len(during) >= CLIENTS and all(s == 200 for s in during), during
    # Every request that got an answer got a real one; only connections made once the port
    # closed (after the delay) fail.
    assert not failed, failed
    refused = [t for t, s in log.requests if s == 0]
    assert all(t >= signalled + DRAIN_DELAY_S - 0.2 for t in refused), refused
    # Not ready within 100 ms of the signal, and from then on.
    late = [(t, s) for t, s in probes if t >= READY_DROP_S and s == 200]
    assert not late, probes
    assert any(s == 503 for _, s in probes), probes
    assert code == 0, server.log_text()[-3000:]
    assert exited_s < _grace_left_s(), (exited_s, _grace_left_s())


def _decode_workers(server_pid: int) -> list[int]:
    """The forkserver's children: the decode workers."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    (forkserver,) = [
        int(pid) for pid in children if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return [
        int(p) for p in Path(f"/proc/{forkserver}/task/{forkserver}/children").read_text().split()
    ]


def test_a_worker_killed_while_idle_is_replaced_by_the_next_probe(
    lite0_onnx: Path, tmp_path: Path, photos: dict[str, Photo]
) -> None:
    with running_server(model_env(lite0_onnx), tmp_path / "server.log") as server:
        before = _decode_workers(server.pid)
        assert len(before) == 2, before
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{before[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the forkserver has reaped it
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        after = _decode_workers(server.pid)
        assert len(after) == 2 and before[0] not in after and before[1] in after, (before, after)
        assert "died idle: replaced" in server.log_text()
        response = httpx.post(
            f"{server.url}/classify", files={"file": photos["coffee"].path.read_bytes()}, timeout=30
        )
        assert response.json()["predictions"][0]["index"] in photos["coffee"].expected
