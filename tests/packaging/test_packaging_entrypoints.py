"""The container scripts in docker/, run here as the image runs them: the serving entrypoint's
graph lookup, the export job's skip-or-export (never a truncated graph), and the health probe
against real HTTP servers, the real service among them."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import free_port
from pkg_helpers import ROOT, VENV, clean_env

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
EXPORT = ROOT / "docker" / "export-entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"

# A stand-in `python` that records how it was called; as `-m model_export` it writes a graph
# into --output-dir, or fails when FAKE_EXPORT_FAIL is set (after writing half a file).
FAKE_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "argv: $*" "model_path: ${EFFICIENTNET_MODEL_PATH:-unset}" >> "$CALLS"
if [[ "$2" == model_export ]]; then
  out="${@: -1}"
  echo partial > "$out/efficientnet_$4.onnx"
  if [[ -n "${FAKE_EXPORT_FAIL:-}" ]]; then exit 3; fi
  echo graph > "$out/efficientnet_$4.onnx"
fi
"""


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    """A scratch /data and baked-graph folder, and a PATH whose `python` is the stand-in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    dirs = {name: tmp_path / name for name in ("models", "baked", "cache", "home")}
    dirs["baked"].mkdir()
    return {**dirs, "bin": bin_dir, "calls": tmp_path / "calls"}


def _run(script: Path, box: dict[str, Path], variant: str, **extra: str) -> tuple[int, str, str]:
    env = clean_env(
        PATH=f"{box['bin']}:/usr/bin:/bin",
        CALLS=str(box["calls"]),
        EFFICIENTNET_VARIANT=variant,
        EFFICIENTNET_MODEL_DIR=str(box["models"]),
        EFFICIENTNET_WEIGHTS_CACHE=str(box["cache"] / "weights"),
        BAKED_MODEL_DIR=str(box["baked"]),
        XDG_CACHE_HOME=str(box["cache"]),
        HOME=str(box["home"]),
        **extra,
    )
    env.pop("EFFICIENTNET_MODEL_PATH", None)
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    calls = box["calls"].read_text() if box["calls"].exists() else ""
    return done.returncode, done.stdout + done.stderr, calls


# --- the serving entrypoint -----------------------------------------------------------------


def test_serves_the_graph_from_the_volume(box: dict[str, Path]) -> None:
    box["models"].mkdir()
    (box["models"] / "efficientnet_b3.onnx").write_text("graph")
    (box["baked"] / "efficientnet_b3.onnx").write_text("baked")
    rc, out, calls = _run(ENTRYPOINT, box, "b3")
    assert rc == 0, out
    assert "argv: -m service --host 0.0.0.0 --port 8000" in calls
    assert "model_path: unset" in calls  # the volume wins over the baked graph


def test_falls_back_to_the_graph_baked_into_the_image(box: dict[str, Path]) -> None:
    (box["baked"] / "efficientnet_lite0.onnx").write_text("baked")
    rc, out, calls = _run(ENTRYPOINT, box, "lite0")
    assert rc == 0, out
    assert f"model_path: {box['baked'] / 'efficientnet_lite0.onnx'}" in calls


def test_missing_graph_is_one_clear_error(box: dict[str, Path]) -> None:
    (box["baked"] / "efficientnet_lite0.onnx").write_text("baked")
    rc, out, calls = _run(ENTRYPOINT, box, "b5")
    assert rc == 1
    assert "no ONNX graph for variant 'b5'" in out
    assert "docker compose run --rm export" in out and "--build-arg VARIANT=b5" in out
    assert calls == "", "the service must not start without its graph"


# --- the export job -------------------------------------------------------------------------


def test_export_skips_a_graph_already_on_the_volume(box: dict[str, Path]) -> None:
    box["models"].mkdir()
    (box["models"] / "efficientnet_b0.onnx").write_text("graph")
    rc, out, calls = _run(EXPORT, box, "b0")
    assert rc == 0 and "already present" in out
    assert calls == ""


def test_export_copies_the_baked_graph(box: dict[str, Path]) -> None:
    (box["baked"] / "efficientnet_lite0.onnx").write_bytes(b"baked graph")
    rc, out, calls = _run(EXPORT, box, "lite0")
    assert rc == 0, out
    assert (box["models"] / "efficientnet_lite0.onnx").read_bytes() == b"baked graph"
    assert calls == ""
    assert sorted(p.name for p in box["models"].iterdir()) == ["efficientnet_lite0.onnx"]


def test_export_builds_another_variant(box: dict[str, Path]) -> None:
    rc, out, calls = _run(EXPORT, box, "b2")
    assert rc == 0, out
    assert "argv: -m model_export --variant b2 --weights imagenet --output-dir" in calls
    assert (box["models"] / "efficientnet_b2.onnx").read_text() == "graph\n"
    assert (box["cache"] / "weights").is_dir()
    assert sorted(p.name for p in box["models"].iterdir()) == ["efficientnet_b2.onnx"]


def test_failed_export_leaves_no_graph_behind(box: dict[str, Path]) -> None:
    rc, out, _ = _run(EXPORT, box, "b2", FAKE_EXPORT_FAIL="1")
    assert rc == 3, out
    # Neither the half-written graph nor its scratch folder: the next run exports afresh.
    assert list(box["models"].iterdir()) == []


# --- the health probe -----------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _probe(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), url], capture_output=True, text=True, timeout=30
    )


def test_healthcheck_exit_codes(http_server: str) -> None:
    assert _probe(f"{http_server}/readyz").returncode == 0
    not_ready = _probe(f"{http_server}/not-ready")
    assert not_ready.returncode == 1 and "answered 503" in not_ready.stderr
    refused = _probe(f"http://127.0.0.1:{free_port()}/readyz")
    assert refused.returncode == 1 and "unhealthy" in refused.stderr


@pytest.mark.slow
def test_entrypoint_serves_the_baked_graph_and_the_probe_sees_it_ready(
    lite0_onnx: Path, tmp_path: Path
) -> None:
    """The real entrypoint and service, as in the image: no graph on the volume, so the baked
    one is used; the HEALTHCHECK probe fails until /readyz answers 200, then passes."""
    port = free_port()
    data = tmp_path / "data"
    env = clean_env(
        PATH=f"{VENV / 'bin'}:/usr/bin:/bin",
        EFFICIENTNET_VARIANT="lite0",
        EFFICIENTNET_MODEL_DIR=str(data / "models"),
        EFFICIENTNET_DEVICE="cpu",
        BAKED_MODEL_DIR=str(lite0_onnx.parent),
        XDG_CACHE_HOME=str(data / "cache"),
        HOME=str(data / "home"),
    )
    env.pop("EFFICIENTNET_MODEL_PATH", None)
    url = f"http://127.0.0.1:{port}/readyz"
    assert _probe(url).returncode == 1
    server = subprocess.Popen(
        ["bash", str(ENTRYPOINT), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _probe(url).returncode != 0:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.5)
        assert (data / "cache").is_dir() and (data / "home").is_dir()
    finally:
        server.send_signal(signal.SIGTERM)  # exec'd: the signal reaches the service itself
        output = server.communicate(timeout=30)[0]
    # A graceful drain exits 0 (service/edge/ stops uvicorn re-raising the signal).
    assert server.returncode == 0, output
    assert "Application shutdown complete" in output
    assert f"loaded {os.fspath(lite0_onnx)}" in output, "the baked graph was not the one served"
