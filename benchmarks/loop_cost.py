"""Where the event loop's time goes: the service's event-loop thread's CPU per request, at
concurrency 1, for requests chosen to separate its costs.

The service parses HTTP, routes, reads uploads, admits, batches and answers on one thread; on
two cores every millisecond it spends is taken from decoding and inference. This measures that
thread alone (the server's main thread: its CPU time from ``/proc``, user and system apart) per
request, for:

- ``GET /healthz``: HTTP, the middleware and the router, no pipeline;
- ``POST /classify`` of a tiny JPEG (32x24, 1 kB): plus the pipeline's own path (admission, the
  decode thread's trip, the batcher, ranking, the answer), with no body to speak of;
- a web photo (640x480) and a phone photo (4032x3024, ~2 MB), as multipart and as the raw body:
  plus reading the body.

Beside the service, every kind also goes to ``uvicorn alone`` (``benchmarks/bare_server.py``):
the same event loop and HTTP parser around an app that only reads the body and answers a fixed
JSON. Its row is the floor: what a request costs the loop before any of the service's code runs.

    python -m benchmarks.loop_cost [--variant b0] [--rounds 5] [--checkout NAME=DIR ...]

Each round runs every kind once on each server (this checkout's, and any ``--checkout``), so
drift on the machine hits all alike; the table shows each kind's median round.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.loadgen import make_upload, run_load
from benchmarks.models import DEFAULT_WEIGHTS, ensure_model
from benchmarks.photos import PHONE_SIZE, WEB_SIZE, Photo, make_photo
from benchmarks.procs import (
    Server,
    free_port,
    main_thread_cpu_ns,
    main_thread_system_seconds,
    start_server,
    tree_cpu_seconds,
)
from benchmarks.report import save_table
from benchmarks.run import service_env
from benchmarks.service_levers import add_server_options, checkout_config, key_values

TINY_SIZE = (32, 24)
FLOOR = "uvicorn alone"


@dataclass(frozen=True)
class Kind:
    """One kind of request: ``photo`` None is ``GET /healthz``."""

    name: str
    requests: int
    photo: Path | None = None
    fmt: str = "multipart"


@dataclass(frozen=True)
class Cost:
    """Per request, in milliseconds."""

    loop_cpu: float  # the event-loop thread, user + system, to the nanosecond (schedstat)
    loop_sys: float  # of which in the kernel (ticks of 10 ms: coarse for short runs)
    process_cpu: float  # the whole server: every thread and the decode workers
    p50: float


def tiny_photo(web: Photo, out_dir: Path) -> Path:
    path = out_dir / f"{web.name}_{TINY_SIZE[0]}x{TINY_SIZE[1]}.jpg"
    Image.open(web.path).resize(TINY_SIZE).save(path, format="JPEG", quality=90)
    return path


def kinds(web: Photo, phone: Photo, tiny: Path, requests: int) -> list[Kind]:
    """Each kind with ``requests`` of it per round: five times as many GETs, a fifth as many
    phone photos, so that each takes a few seconds."""
    few = max(1, requests // 5)
    return [
        Kind("GET /healthz", 5 * requests),
        Kind("classify tiny JPEG", requests, tiny),
        Kind("classify web, multipart", requests, web.path),
        Kind("classify web, raw body", requests, web.path, "raw"),
        Kind("classify phone, multipart", few, phone.path),
        Kind("classify phone, raw body", few, phone.path, "raw"),
    ]


def _healthz(server: Server, requests: int) -> list[float]:
    host, port = server.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"GET /healthz answered {answer.status}")
        latencies.append(time.perf_counter() - started)
    connection.close()
    return latencies


def _classify(server: Server, kind: Kind) -> float:
    assert kind.photo is not None
    upload = make_upload(kind.photo, kind.fmt, "file", [])
    result = asyncio.run(
        run_load(server.base_url + "/classify", [upload], 1, kind.requests, 60.0, warmup=2)
    )
    if result.get("errors") or result.get("count") != kind.requests:
        raise RuntimeError(f"{kind.name}: {result.get('first_error') or result}")
    return float(result["p50_ms"])  # type: ignore[arg-type]


def measure(server: Server, kind: Kind) -> Cost:
    pid = server.process.pid
    cpu, sys_s = main_thread_cpu_ns(pid), main_thread_system_seconds(pid)
    tree = tree_cpu_seconds(pid)
    if kind.photo is None:
        p50 = 1e3 * statistics.median(_healthz(server, kind.requests))
        served = kind.requests
    else:
        p50 = _classify(server, kind)
        served = kind.requests + 2  # and the warm-up
    return Cost(
        loop_cpu=(main_thread_cpu_ns(pid) - cpu) / 1e6 / served,
        loop_sys=1e3 * (main_thread_system_seconds(pid) - sys_s) / served,
        process_cpu=1e3 * (tree_cpu_seconds(pid) - tree) / served,
        p50=p50,
    )


def table(variant: str, samples: dict[tuple[str, str], list[Cost]], servers: list[str]) -> str:
    lines = [
        f"| {variant}: request | server | event loop CPU ms | of it kernel ms | whole server "
        "CPU ms | p50 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    names = list(dict.fromkeys(kind for kind, _ in samples))
    for kind in names:
        for server in servers:
            costs = samples[(kind, server)]

            def median(field: str, costs: list[Cost] = costs) -> float:
                return statistics.median(getattr(c, field) for c in costs)

            lines.append(
                f"| {kind} | {server} | {median('loop_cpu'):.2f} | {median('loop_sys'):.2f} | "
                f"{median('process_cpu'):.2f} | {median('p50'):.1f} |"
            )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="of each upload, per round")
    add_server_options(parser)
    return parser


def _start(
    name: str, command: tuple[str, ...], env: dict[str, str], args: argparse.Namespace, model: Path
) -> Server:
    port = free_port()
    environment = {**service_env(args.variant, model, port, {}), **env}
    return start_server(name, list(command), port, environment, args.out_dir / "loop-cost.log")


def _start_floor(args: argparse.Namespace) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.bare_server", "--port", str(port)]
    return start_server(FLOOR, command, port, {}, args.out_dir / "loop-cost-floor.log", "/healthz")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model = ensure_model(args.variant, DEFAULT_WEIGHTS.get(args.variant, "random"), args.models_dir)
    photo_dir = args.out_dir / "loop-cost-photos"
    photo_dir.mkdir(parents=True, exist_ok=True)
    web = make_photo("chelsea", WEB_SIZE, photo_dir)
    phone = make_photo("coffee", PHONE_SIZE, photo_dir)
    requests = kinds(web, phone, tiny_photo(web, photo_dir), args.requests)
    checkouts = {"this checkout": (sys.executable, "-m", "service")}
    env: dict[str, dict[str, str]] = {"this checkout": {}}
    for name, directory in key_values(args.checkout).items():
        config = checkout_config(Path(directory))
        checkouts[name], env[name] = config.command, config.env
    servers: dict[str, Server] = {}
    samples: dict[tuple[str, str], list[Cost]] = {}
    try:  # a server that fails to start stops the ones already started
        for name, command in checkouts.items():
            servers[name] = _start(name, command, env[name], args, model)
        servers[FLOOR] = _start_floor(args)
        for _ in range(args.rounds):
            for kind in requests:
                for name, server in servers.items():
                    cost = measure(server, kind)
                    samples.setdefault((kind.name, name), []).append(cost)
                    print(f"  {kind.name} / {name}: {cost}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    md = table(args.variant, samples, list(servers))
    save_table(md, args.out_dir, f"loop-cost-{args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
