"""The real service as a subprocess (``python -m service``) on a free loopback port, and its memory.

Suites that need a live server (reliability, interfaces) start it through here, so there is one
way to launch, wait for readiness and stop it. A separate process on purpose: a crash, an OOM
kill, a wedged event loop or a leaked thread shows up as what it is, and the server's RSS can be
read from /proc without the test's own allocations mixed in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import onnx

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
# /readyz answers 503 this soon after SIGTERM: the service's promise for a drain, measured
# under load by tests/operate/test_drain.py and counted on by the manifests' probe timings.
READY_DROP_S = 0.1


def clean_env(**overrides: str) -> dict[str, str]:
    """This environment without the developer's EFFICIENTNET_* and OTEL_* settings (a test
    asks for tracing itself), plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EFFICIENTNET_", "OTEL_"))}
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


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _status_or_zero(pid: int, key: str) -> int:
    try:
        return proc_status(pid)[key]
    except OSError:  # a worker that exited between listing and reading
        return 0


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The server and its descendants (the decode worker processes, their forkserver)."""
        return [self.pid, *descendants(self.pid)]

    def rss_kb(self) -> int:
        """VmRSS of the server and its worker processes together."""
        return sum(_status_or_zero(pid, "VmRSS") for pid in self.pids())

    def hwm_kb(self) -> int:
        """VmHWM summed over the server and its workers: at least their peak together."""
        return sum(_status_or_zero(pid, "VmHWM") for pid in self.pids())

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), to measure one phase's peak."""
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a worker that just exited
                Path(f"/proc/{pid}/clear_refs").write_text("5")

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


def start_server(
    env: Mapping[str, str], log: Path, *args: str, launcher: Sequence[str] = ()
) -> Server:
    """``python -m service`` on a free loopback port, ready (model loaded and warmed).

    ``launcher``: a command that execs the rest of its arguments (say, in another mount
    namespace); the server's pid is then the launcher's, so it must exec, not fork.
    """
    port = free_port()
    cmd = [*launcher, sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    cmd += args
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
def running_server(
    env: Mapping[str, str], log: Path, *args: str, launcher: Sequence[str] = ()
) -> Iterator[Server]:
    server = start_server(env, log, *args, launcher=launcher)
    try:
        yield server
    finally:
        stop_server(server)


def with_metadata(source: Path, target: Path, value: str | None) -> Path:
    """A copy of ``source`` whose ``efficientnet`` metadata is removed (None) or replaced."""
    model = onnx.load(str(source))
    props = [p for p in model.metadata_props if p.key != "efficientnet"]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    if value is not None:
        model.metadata_props.add(key="efficientnet", value=value)
    onnx.save(model, str(target))
    return target
