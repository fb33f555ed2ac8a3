"""The real service as a subprocess (``python -m service``), its memory, and the answer contract.

Reliability tests talk to a separate process on purpose: a crash, an OOM kill, a wedged event
loop or a leaked thread shows up as what it is, and the server's RSS can be read from /proc
without the test's own allocations mixed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
# The shared server's EFFICIENTNET_REQUEST_TIMEOUT_S: short enough that a hang fails the suite
# quickly, long enough for a loaded 2-core CI machine.
REQUEST_TIMEOUT_S = 10
API_KEY = "reliability-test-key"
# Statuses an upload may get; anything else (5xx above all) is a failure.
UPLOAD_ERRORS = {400, 413, 415}
ERROR_CODES = {"bad_image", "empty_body", "unsupported_media_type", "image_too_large"}


def clean_env(**overrides: str) -> dict[str, str]:
    """This environment without the developer's EFFICIENTNET_* settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFFICIENTNET_")}
    # Two cores shared with the rest of the suite: do not let onnxruntime or BLAS take more.
    env.update(
        OMP_NUM_THREADS="2",
        EFFICIENTNET_DEVICE="cpu",
        EFFICIENTNET_INTRA_OP_THREADS="2",
        EFFICIENTNET_PREPROCESS_THREADS="2",
    )
    env.update(overrides)
    return env


def model_env(model: Path, **overrides: str) -> dict[str, str]:
    variant = model.stem.removeprefix("efficientnet_")
    values = {"EFFICIENTNET_VARIANT": variant, "EFFICIENTNET_MODEL_PATH": str(model)}
    return clean_env(**{**values, **overrides})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of a process in kB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kb(self) -> int:
        return proc_status(self.pid)["VmRSS"]

    def hwm_kb(self) -> int:
        return proc_status(self.pid)["VmHWM"]

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), to measure one phase's peak."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_alive(self) -> None:
        code = self.process.poll()
        assert code is None, f"server exited with {code}:\n{self.log_text()[-4000:]}"
        assert httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}:\n{server.log_text()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready in {STARTUP_TIMEOUT_S} s:\n{server.log_text()}")


def start_server(env: Mapping[str, str], log: Path, *args: str) -> Server:
    """``python -m service`` on a free loopback port, ready (model loaded and warmed)."""
    port = free_port()
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=dict(env), stdout=out, stderr=out)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> int:
    """SIGTERM (graceful), then SIGKILL if it does not exit in time; returns the exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            return server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
            raise AssertionError(f"server ignored SIGTERM for {STOP_TIMEOUT_S} s") from None
    return server.process.returncode


@contextlib.contextmanager
def running_server(env: Mapping[str, str], log: Path, *args: str) -> Iterator[Server]:
    server = start_server(env, log, *args)
    try:
        yield server
    finally:
        stop_server(server)


def assert_error_shape(response: httpx.Response, statuses: set[int] | None = None) -> str:
    """The service's one error shape; returns the error code."""
    allowed = statuses or UPLOAD_ERRORS
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
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
