"""What the peer benchmark starts and measures: each server (ours and every peer), how it is
started on 127.0.0.1, when it is ready, and its endpoints (path + request shape).

Every server gets the machine's whole thread budget (on 2 cores: 2 onnxruntime / torch
intra-op threads), as the service does by default."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.peers.venvs import REPO, ensure_venv, version
from benchmarks.procs import Server, free_port, process_tree, start_server
from benchmarks.run import service_env

THREADS = os.cpu_count() or 1
JPEG, UINT8 = "jpeg", "uint8"  # what a request carries: an encoded photo, or the model input


@dataclass(frozen=True)
class Endpoint:
    """One measured row: a server, a path and the request shape the load generator sends."""

    name: str
    path: str
    fmt: str  # benchmarks.loadgen --format
    kind: str = JPEG  # compared with our endpoint of the same kind
    field: str = "file"  # multipart field

    @property
    def phone(self) -> bool:
        """The phone workload means something only where the server decodes the photo."""
        return self.kind == JPEG


@dataclass(frozen=True)
class Tuning:
    """The peers' batching settings (`--tune name=value`). Triton: its model-configuration
    guide's procedure starts from the dynamic batcher with a maximum batch size and no queue
    delay, raising the delay only while throughput still rises; two instances let one batch
    decode while another runs. TorchServe: batch_size with a short max_batch_delay (its
    docs' example uses 50 ms, which at concurrency 1 adds up to 50 ms to every request), and
    its own CPU default of one worker per logical CPU, each given its share of the threads
    (2 x 1 here; 1 x 2 burned 5x the CPU per image in OpenMP spin-waits on a busy machine).
    BentoML: max_batch_size; its adaptive dispatcher picks the window itself, within
    max_latency_ms, left at BentoML's default of 60 s (past it the dispatcher answers 503).
    LitServe: its docstring's CPU advice, workers_per_device = cores, each worker given its
    share of the threads (2 x 1), no batching. Short runs (b0, best of 2 x 3 s, shared 2-core
    machine) gave web images/s at c1 / c16 / c64 and phone c16: 2 x 1 thread 33 / 65 / 64 /
    22.5; 1 worker x 2 threads 48 / 58 / 53 / 15.3 (p50 at c1 20 ms against 2 x 1's 29:
    the one to check c1 with, `--tune litserve_workers=1`); 1 worker, max_batch_size 8,
    batch_timeout 2 ms 41 / 51 / 54 / 15.3 (the batch is decoded one image after another in
    the worker, so it adds waiting, not parallelism)."""

    triton_max_batch: int = 8
    triton_delay_us: int = 0
    triton_instances: int = 2
    torchserve_batch: int = 8
    torchserve_delay_ms: int = 5
    torchserve_workers: int = 2
    bentoml_max_batch: int = 8
    bentoml_max_latency_ms: int = 60_000
    litserve_workers: int = 2
    litserve_max_batch: int = 1
    litserve_batch_timeout_ms: int = 0


@dataclass
class Context:
    variant: str
    model: Path
    meta: dict[str, Any]
    work_dir: Path
    log_dir: Path
    tuning: Tuning = field(default_factory=Tuning)
    service_env: dict[str, str] = field(default_factory=dict)  # extra EFFICIENTNET_* settings


@dataclass
class Started:
    server: Server
    endpoints: list[Endpoint]
    versions: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)


# --- readiness -------------------------------------------------------------------------------


def stop_tree(server: Server, timeout_s: float = 30.0) -> None:
    """SIGINT to the server, then SIGKILL to whatever of its process tree is left (a Java
    frontend, a tritonserver, Python-backend stubs)."""
    pids = process_tree(server.process.pid)
    server.stop(timeout_s)
    for pid in pids[1:]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_ready(server: Server, checks: list[tuple[str, str]], timeout_s: float = 180.0) -> None:
    """Poll each (path, text the body must contain) in turn; `server.ready_s` then runs from
    spawn to the last check passing (a server that answers before its models load is not
    ready). A server that does not get ready is stopped, its whole process tree."""
    try:
        _poll(server, checks, timeout_s)
    except BaseException:
        stop_tree(server)
        raise


def _poll(server: Server, checks: list[tuple[str, str]], timeout_s: float) -> None:
    start = time.perf_counter() - server.ready_s
    deadline = time.perf_counter() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        for path, text in checks:
            while True:
                if server.process.poll() is not None:
                    raise RuntimeError(f"{server.name} exited; log: {server.log_path}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{server.name} not ready at {path}; log {server.log_path}")
                # ":<port>/path": another port of the same server (TorchServe's management API).
                host = server.base_url.rsplit(":", 1)[0]
                url = host + path if path.startswith(":") else server.base_url + path
                try:
                    got = client.get(url)
                    if got.status_code == 200 and text in got.text:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
    server.ready_s = time.perf_counter() - start


def _start(
    name: str, argv: list[str], port: int, env: dict[str, str], ctx: Context, ready: str
) -> Server:
    log = ctx.log_dir / f"{name}-{ctx.variant}-{port}.log"
    return start_server(name, argv, port, env, log, ready, 240.0)


def _peer_env() -> dict[str, str]:
    # The peers import benchmarks.peers.* and the service's preprocessing from the checkout.
    return {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(THREADS)}


# --- ours ------------------------------------------------------------------------------------


def start_service(ctx: Context) -> Started:
    port = free_port()
    env = service_env(ctx.variant, ctx.model, port, ctx.service_env)
    server = _start("service", [sys.executable, "-m", "service"], port, env, ctx, "/readyz")
    name = f"efficientnet_{ctx.variant}"
    endpoints = [
        Endpoint("service", "/classify", "multipart"),
        # The same process in the peers' request shapes (like-for-like rows, and what the dry
        # run drives): Triton's client-preprocessed tensors and JPEG bytes over the Open
        # Inference Protocol, TorchServe's raw body.
        Endpoint("service /v2 uint8 tensors", f"/v2/models/{name}/infer", "oip-uint8", UINT8),
        Endpoint("service /v2 JPEG bytes", f"/v2/models/{name}/infer", "oip-bytes"),
        Endpoint("service raw body", "/classify", "raw"),
    ]
    meta = httpx.get(server.base_url + "/metadata", timeout=5).json()
    settings = {**meta["batching"], "provider": meta["provider"]}
    return Started(server, endpoints, {"service": "this checkout"}, settings)


# --- NVIDIA Triton (PyTriton) ----------------------------------------------------------------


def start_triton(ctx: Context) -> Started:
    bin_dir = ensure_venv("triton")
    port, grpc, metrics = free_port(), free_port(), free_port()
    argv = [
        str(bin_dir / "python"),
        "-m",
        "benchmarks.peers.triton.server",
        "--model",
        str(ctx.model),
        "--http-port",
        str(port),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--threads",
        str(THREADS),
        "--max-batch",
        str(ctx.tuning.triton_max_batch),
        "--delay-us",
        str(ctx.tuning.triton_delay_us),
        "--instances",
        str(ctx.tuning.triton_instances),
    ]
    server = _start("triton", argv, port, _peer_env(), ctx, "/v2/health/live")
    models = ("efficientnet_jpeg", "efficientnet_uint8")
    wait_ready(server, [(f"/v2/models/{m}/ready", "") for m in models])
    meta = httpx.get(server.base_url + "/v2", timeout=5).json()
    endpoints = [
        Endpoint("triton JPEG bytes", f"/v2/models/{models[0]}/infer", "oip-bytes"),
        Endpoint(
            "triton uint8 tensors (client-preprocessed)",
            f"/v2/models/{models[1]}/infer",
            "oip-uint8",
            UINT8,
        ),
    ]
    versions = {
        "tritonserver": str(meta.get("version")),
        "nvidia-pytriton": version("triton", "nvidia-pytriton"),
        "onnxruntime": version("triton", "onnxruntime"),
    }
    settings = {
        "max_batch_size": ctx.tuning.triton_max_batch,
        "max_queue_delay_us": ctx.tuning.triton_delay_us,
        "instances per model": ctx.tuning.triton_instances,
        "ORT intra-op threads": THREADS,
    }
    return Started(server, endpoints, versions, settings)


# --- TorchServe ------------------------------------------------------------------------------

TS_MODEL = "efficientnet"
TS_ONNX = "efficientnet_onnx"


def archive_torchserve(ctx: Context, bin_dir: Path) -> Path:
    """The two .mar files: eager as TorchServe's docs build one (--model-file: the class,
    --serialized-file: its state dict) and the same .onnx as the service's; both with the
    handler, the weights' transform and the label map as extra files."""
    import torch

    from benchmarks.torch_model import build_torch_model

    src = Path(__file__).resolve().parent / "torchserve"
    out = ctx.work_dir / f"torchserve-{ctx.variant}"
    store = out / "store"
    store.mkdir(parents=True, exist_ok=True)
    model = build_torch_model(ctx.meta)  # the same weights as the .onnx (its own metadata)
    torch.save(model.state_dict(), out / "weights.pt")
    spec = {
        "variant": ctx.variant,
        "style": asdict(model.style),
        "preprocessing": ctx.meta["preprocessing"],
    }
    (out / "peer_model.json").write_text(json.dumps(spec))
    labels = {str(i): label for i, label in enumerate(ctx.meta["labels"])}
    (out / "index_to_name.json").write_text(json.dumps(labels))
    extra = f"{out / 'peer_model.json'},{out / 'index_to_name.json'}"
    archiver = [str(bin_dir / "torch-model-archiver"), "--version", "1.0", "--force"]
    archiver += ["--export-path", str(store), "--extra-files", extra]
    eager = ["--model-name", TS_MODEL, "--model-file", str(src / "model.py")]
    eager += ["--serialized-file", str(out / "weights.pt"), "--handler", str(src / "handler.py")]
    onnx = ["--model-name", TS_ONNX, "--serialized-file", str(ctx.model)]
    onnx += ["--handler", str(src / "handler_onnx.py")]
    for args in (eager, onnx):
        subprocess.run(archiver + args, check=True, capture_output=True)
    return store


def torchserve_config(ctx: Context, store: Path, ports: tuple[int, int, int]) -> Path:
    def model(name: str, workers: int) -> dict[str, Any]:
        return {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{name}.mar",
                "minWorkers": workers,
                "maxWorkers": workers,
                "batchSize": ctx.tuning.torchserve_batch,
                "maxBatchDelay": ctx.tuning.torchserve_delay_ms,
                "responseTimeout": 120,
            }
        }

    # ONNX: one worker, as TorchServe's setup_ort_session gives each the CPU count in threads.
    models = {TS_MODEL: model(TS_MODEL, ctx.tuning.torchserve_workers), TS_ONNX: model(TS_ONNX, 1)}
    lines = [
        f"inference_address=http://127.0.0.1:{ports[0]}",
        f"management_address=http://127.0.0.1:{ports[1]}",
        f"metrics_address=http://127.0.0.1:{ports[2]}",
        f"model_store={store}",
        f"load_models={TS_MODEL}.mar,{TS_ONNX}.mar",
        "models=" + json.dumps(models),
        "job_queue_size=1000",
        "disable_token_authorization=true",
        "enable_model_api=false",
        "install_py_dep_per_model=false",
    ]
    path = store.parent / "config.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_torchserve(ctx: Context) -> Started:
    bin_dir = ensure_venv("torchserve")
    threads_per_worker = max(1, THREADS // ctx.tuning.torchserve_workers)
    store = archive_torchserve(ctx, bin_dir)
    ports = (free_port(), free_port(), free_port())
    config = torchserve_config(ctx, store, ports)
    logs = store.parent / "logs"
    argv = [
        str(bin_dir / "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        "--model-store",
        str(store),
        "--ts-config",
        str(config),
        "--disable-token-auth",
    ]
    env = {
        **_peer_env(),
        "LOG_LOCATION": str(logs),
        "METRICS_LOCATION": str(logs),
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        # The thread budget split between the workers (torch reads OMP_NUM_THREADS).
        "OMP_NUM_THREADS": str(threads_per_worker),
    }
    server = _start("torchserve", argv, ports[0], env, ctx, "/ping")
    wait_ready(server, [(f":{ports[1]}/models/{m}", '"READY"') for m in (TS_MODEL, TS_ONNX)])
    endpoints = [
        Endpoint("torchserve eager", f"/predictions/{TS_MODEL}", "raw"),
        Endpoint("torchserve ONNX", f"/predictions/{TS_ONNX}", "raw"),
    ]
    versions = {
        "torchserve": version("torchserve", "torchserve"),
        "torch": version("torchserve", "torch"),
        "torchvision": version("torchserve", "torchvision"),
        "onnxruntime": version("torchserve", "onnxruntime"),
    }
    settings = {
        "batchSize": ctx.tuning.torchserve_batch,
        "maxBatchDelay ms": ctx.tuning.torchserve_delay_ms,
        "eager workers": ctx.tuning.torchserve_workers,
        "torch threads per worker": threads_per_worker,
        "ONNX workers": 1,
        "ORT threads": THREADS,
    }
    return Started(server, endpoints, versions, settings)


# --- BentoML ---------------------------------------------------------------------------------


def start_bentoml(ctx: Context) -> Started:
    bin_dir = ensure_venv("bentoml")
    port = free_port()
    argv = [
        str(bin_dir / "bentoml"),
        "serve",
        "benchmarks.peers.bentoml.service:Classifier",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--working-dir",
        str(REPO),
    ]
    env = {
        **_peer_env(),
        "PEER_MODEL": str(ctx.model),
        "PEER_THREADS": str(THREADS),
        "PEER_MAX_BATCH": str(ctx.tuning.bentoml_max_batch),
        "PEER_MAX_LATENCY_MS": str(ctx.tuning.bentoml_max_latency_ms),
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(ctx.work_dir / "bentoml-home"),
    }
    server = _start("bentoml", argv, port, env, ctx, "/readyz")
    endpoints = [Endpoint("bentoml", "/classify", "multipart", field="images")]
    versions = {
        "bentoml": version("bentoml", "bentoml"),
        "onnxruntime": version("bentoml", "onnxruntime"),
    }
    settings = {
        "max_batch_size": ctx.tuning.bentoml_max_batch,
        "max_latency_ms": ctx.tuning.bentoml_max_latency_ms,
        "workers": 1,
        "ORT intra-op threads": THREADS,
    }
    return Started(server, endpoints, versions, settings)


# --- LitServe --------------------------------------------------------------------------------


def start_litserve(ctx: Context) -> Started:
    bin_dir = ensure_venv("litserve")
    port = free_port()
    tuning = ctx.tuning
    argv = [
        str(bin_dir / "python"),
        "-m",
        "benchmarks.peers.litserve.server",
        "--model",
        str(ctx.model),
        "--port",
        str(port),
        "--threads",
        str(THREADS),
        "--workers",
        str(tuning.litserve_workers),
        "--max-batch",
        str(tuning.litserve_max_batch),
        "--batch-timeout-ms",
        str(tuning.litserve_batch_timeout_ms),
    ]
    # /health answers 200 "ok" only once every inference worker's setup (the session) is done.
    server = _start("litserve", argv, port, _peer_env(), ctx, "/health")
    endpoints = [Endpoint("litserve", "/predict", "multipart")]
    versions = {
        "litserve": version("litserve", "litserve"),
        "onnxruntime": version("litserve", "onnxruntime"),
    }
    settings = {
        "workers_per_device": tuning.litserve_workers,
        "max_batch_size": tuning.litserve_max_batch,
        "batch_timeout ms": tuning.litserve_batch_timeout_ms,
        "ORT intra-op threads per worker": max(1, THREADS // tuning.litserve_workers),
    }
    return Started(server, endpoints, versions, settings)


STARTERS: dict[str, Callable[[Context], Started]] = {
    "triton": start_triton,
    "torchserve": start_torchserve,
    "bentoml": start_bentoml,
    "litserve": start_litserve,
}
