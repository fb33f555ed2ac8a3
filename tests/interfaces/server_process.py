"""Start the real service (uvicorn) in a subprocess on a free local port, for the interface tests.

It runs with an API key, so every client under test (the OIP client, the CLI, the web page) is
exercised with authentication on, the way a deployment runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "interfaces-test-key"
STARTUP_TIMEOUT_S = 90


@dataclass(frozen=True)
class LiveServer:
    url: str
    api_key: str
    model_path: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def host_port(self) -> str:  # tritonclient takes "host:port", not a URL
        return self.url.removeprefix("http://")


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"the service was not ready within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}"
    )


@contextmanager
def serve(model_path: Path, log: Path) -> Iterator[LiveServer]:
    """A ready server for ``model_path`` (variant lite0, with API_KEY), stopped on exit."""
    # Bind here and hand uvicorn the socket: a free port with no window for another process to
    # take it between choosing and binding.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Only the settings chosen here: a stray EFFICIENTNET_* in the caller's environment must not
    # change what is under test.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EFFICIENTNET_")}
    env = {
        **inherited,
        "EFFICIENTNET_VARIANT": "lite0",
        "EFFICIENTNET_MODEL_PATH": str(model_path),
        "EFFICIENTNET_DEVICE": "cpu",
        "EFFICIENTNET_API_KEY": API_KEY,
        "EFFICIENTNET_INTRA_OP_THREADS": "2",
        "EFFICIENTNET_PREPROCESS_THREADS": "2",
    }
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    cmd += ["--fd", str(sock.fileno()), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()]
        )
    sock.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield LiveServer(url, API_KEY, model_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
