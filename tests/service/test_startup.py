"""Startup refusals, in process (ModelSession.load / load_settings) and through `python -m service`:
one clear line on stderr and a non-zero exit. Plus the provider really in use."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import onnx
import onnxruntime as ort
import pytest
from live_server import free_port
from service_helpers import ROOT, ready_wait, settings_for

from service.config import Settings, load_settings
from service.errors import StartupError
from service.pipeline.session import ModelSession


@pytest.fixture(scope="module")
def broken_models(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of the real Lite0 graph, each broken one way."""
    directory = tmp_path_factory.mktemp("broken")
    original = onnx.load(str(lite0_onnx))
    meta = json.loads(next(p.value for p in original.metadata_props if p.key == "efficientnet"))

    def with_metadata(name: str, value: str | None) -> Path:
        model = onnx.ModelProto()
        model.CopyFrom(original)
        del model.metadata_props[:]
        if value is not None:
            model.metadata_props.add(key="efficientnet", value=value)
        path = directory / f"efficientnet_{name}.onnx"
        onnx.save(model, str(path))
        return path

    data = lite0_onnx.read_bytes()
    (directory / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (directory / "garbage.onnx").write_bytes(os.urandom(4096))
    return {
        "no_metadata": with_metadata("no_metadata", None),
        "bad_json": with_metadata("bad_json", "{not json"),
        "schema_v2": with_metadata("schema_v2", json.dumps({**meta, "schema_version": 2})),
        "labels_999": with_metadata(
            "labels_999", json.dumps({**meta, "labels": meta["labels"][:999]})
        ),
        "truncated": directory / "truncated.onnx",
        "garbage": directory / "garbage.onnx",
        "missing": directory / "nothing_here.onnx",
    }


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "model file not found"),
        ("truncated", "cannot load ONNX model"),
        ("garbage", "cannot load ONNX model"),
        ("no_metadata", "has no 'efficientnet' metadata"),
        ("bad_json", "not valid JSON"),
        ("schema_v2", "schema_version"),
        ("labels_999", "999 labels"),
    ],
)
def test_bad_model_files_refused(broken_models: dict[str, Path], case: str, expected: str) -> None:
    settings = Settings(model_path=broken_models[case], variant="lite0", device="cpu")
    with pytest.raises(StartupError, match=expected) as caught:
        ModelSession.load(settings)
    assert "\n" not in str(caught.value)


def test_variant_mismatch_refused(lite0_onnx: Path) -> None:
    with pytest.raises(
        StartupError, match="holds variant 'lite0' but EFFICIENTNET_VARIANT is 'b3'"
    ):
        ModelSession.load(Settings(model_path=lite0_onnx, variant="b3", device="cpu"))


def test_model_file_from_dir_and_variant(lite0_onnx: Path) -> None:
    settings = Settings(model_dir=lite0_onnx.parent, variant="lite0", device="cpu")
    assert ModelSession.load(settings).path == lite0_onnx
    assert Settings(model_dir=Path("m"), variant="b4").resolved_model_path == Path(
        "m/efficientnet_b4.onnx"
    )


def test_auto_falls_back_to_cpu_loudly(lite0_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.session"):
        session = ModelSession.load(settings_for(lite0_onnx, device="auto"))
    assert session.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider" not in session.providers
    assert any("CUDA is not available" in r.message for r in caplog.records)


@pytest.mark.parametrize(("device", "preloads"), [("auto", 1), ("cpu", 0)])
def test_cuda_libraries_preloaded_only_when_cuda_may_be_used(
    lite0_onnx: Path, monkeypatch: pytest.MonkeyPatch, device: str, preloads: int
) -> None:
    calls: list[None] = []
    real = ort.preload_dlls
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(real()))
    session = ModelSession.load(settings_for(lite0_onnx, device=device))
    assert len(calls) == preloads
    assert session.provider == "CPUExecutionProvider"  # still honest on this CPU-only machine


def test_cuda_refuses_without_cuda(lite0_onnx: Path) -> None:
    with pytest.raises(
        StartupError, match="EFFICIENTNET_DEVICE=cuda but the CUDA execution provider"
    ):
        ModelSession.load(settings_for(lite0_onnx, device="cuda"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"EFFICIENTNET_DEVICE": "gpu"},
            "invalid EFFICIENTNET_DEVICE='gpu': Input should be 'auto', 'cuda' or 'cpu'",
        ),
        # No list of variants here (the file says which it holds), but a name must be one.
        ({"EFFICIENTNET_VARIANT": "B-9"}, "invalid EFFICIENTNET_VARIANT='B-9'"),
        ({"EFFICIENTNET_MAX_BATCH_SIZE": "0"}, "invalid EFFICIENTNET_MAX_BATCH_SIZE='0'"),
        ({"EFFICIENTNET_MAX_UPLOAD_BYTES": "lots"}, "invalid EFFICIENTNET_MAX_UPLOAD_BYTES='lots'"),
    ],
)
def test_bad_env_values(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StartupError) as caught:
        load_settings()
    assert str(caught.value).startswith(expected)


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("EFFICIENTNET_")]:
        monkeypatch.delenv(key)
    defaults = load_settings()
    assert defaults.variant is None and defaults.device == "auto"
    assert defaults.resolved_model_path == Path("models/efficientnet_lite0.onnx")
    assert defaults.max_upload_bytes == 20 * 1024 * 1024 and defaults.api_key is None
    assert defaults.batch_policy("CPUExecutionProvider").max_delay_ms == 0
    assert defaults.batch_policy("CUDAExecutionProvider").max_batch_size > 1
    # Two runs in flight on the CPU (measured, BENCHMARKS.md), one on a GPU.
    assert defaults.batch_policy("CPUExecutionProvider").workers == 2
    assert defaults.batch_policy("CUDAExecutionProvider").workers == 1
    monkeypatch.setenv("EFFICIENTNET_INFERENCE_WORKERS", "3")
    assert load_settings().batch_policy("CUDAExecutionProvider").workers == 3
    monkeypatch.setenv("EFFICIENTNET_API_KEY", "")
    monkeypatch.setenv("EFFICIENTNET_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("EFFICIENTNET_MODEL_PATH", "/x/y.onnx")
    custom = load_settings()
    assert (
        custom.api_key is None and custom.batch_policy("CPUExecutionProvider").max_batch_size == 4
    )
    assert custom.resolved_model_path == Path("/x/y.onnx")


# --- python -m service ---------------------------------------------------------------------------


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EFFICIENTNET_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "model file not found"),
        ("garbage", "cannot load ONNX model"),
        ("no_metadata", "has no 'efficientnet' metadata"),
        ("variant", "holds variant 'lite0' but EFFICIENTNET_VARIANT is 'b0'"),
        ("env", "invalid EFFICIENTNET_DEVICE='tpu'"),
        ("cuda", "EFFICIENTNET_DEVICE=cuda but the CUDA execution provider did not initialize"),
    ],
)
def test_cli_startup_errors_are_one_line(
    broken_models: dict[str, Path], lite0_onnx: Path, case: str, expected: str
) -> None:
    env = {"EFFICIENTNET_MODEL_PATH": str(broken_models.get(case, lite0_onnx))}
    env |= {"variant": {"EFFICIENTNET_VARIANT": "b0"}, "env": {"EFFICIENTNET_DEVICE": "tpu"}}.get(
        case, {}
    )
    env |= {"EFFICIENTNET_DEVICE": "cuda"} if case == "cuda" else {}
    done = run_cli(env, "--port", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("efficientnet-serve: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def _read_all(connection: socket.socket) -> bytes:
    connection.settimeout(30)
    chunks = []
    with connection:
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_cli_serves_and_drains_on_sigterm(lite0_onnx: Path, photos: dict[str, Any]) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EFFICIENTNET_")}
    env = {**clean, "EFFICIENTNET_MODEL_PATH": str(lite0_onnx), "EFFICIENTNET_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        ready_wait(url)
        startup_s = time.monotonic() - started
        data = photos["chelsea"].path.read_bytes()
        with httpx.Client(base_url=url, timeout=30) as client:
            ready = client.get("/readyz").json()
            assert ready["provider"] == "CPUExecutionProvider"
            metrics = client.get("/metrics").text
            assert 'provider="CPUExecutionProvider"' in metrics
        # In flight when SIGTERM arrives: each must still get its answer.
        head = (
            f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
        for connection in connections:
            connection.sendall(head + data)
        time.sleep(0.2)  # let uvicorn accept them all
        process.send_signal(signal.SIGTERM)
        answers = [_read_all(c) for c in connections]
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:40] for a in answers]
    top = [json.loads(a.split(b"\r\n\r\n", 1)[1])["predictions"][0]["index"] for a in answers]
    assert set(top) <= photos["chelsea"].expected
    # A graceful drain exits 0 (service/edge/ stops uvicorn re-raising the signal).
    assert process.returncode == 0
    assert "CUDA is not available, running on CPUExecutionProvider" in stderr  # auto: loud
    assert "on CPUExecutionProvider" in stderr and "ready" in stderr
    assert startup_s < 30


def test_default_thread_counts_follow_the_cpu_quota_not_the_host(tmp_path: Path) -> None:
    """A pod limited to 2 CPUs on a big node: threads (and decode worker processes) follow the
    cgroup quota; with no quota, the affinity mask."""
    from service.config import usable_cores

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs
    assert usable_cores(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path / "absent") == len(os.sched_getaffinity(0))
    cpu_max.write_text("garbage\n")
    assert usable_cores(cpu_max) == len(os.sched_getaffinity(0))
