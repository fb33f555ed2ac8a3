"""The service's settings side by side over HTTP, with memory: each configuration is its own
server process (``python -m service``, or the plain uvicorn CLI), loaded with web photos at each
concurrency level and then with phone photos at 16 (the peak-RSS level), round-robin over
rounds so that load from elsewhere on the machine hits every configuration alike.

    python -m benchmarks.service_levers [--variant b0] [--rounds 2] [--configs NAME ...]
    python -m benchmarks.service_levers --levels 1 16 --level-seconds 30 --no-phone \\
        --service-env EFFICIENTNET_MAX_BATCH_SIZE=8 --configs "service defaults" "max batch 2"
    git worktree add ../before HEAD~1
    python -m benchmarks.service_levers --configs "service defaults" --checkout before=../before

Prints a markdown table of the median round per configuration: images/s per level, c16's ratio
to the first configuration, c1's median and c16's 99th-percentile latency, refused or failed
requests, and peak memory (the kernel's VmHWM of the process tree, each page once) after the
web levels and after the phone level. ``--service-env`` sets a base every configuration starts
from (say, earlier defaults); a configuration's own settings win over it. ``--checkout NAME=DIR``
adds a configuration that runs the service with its defaults from another checkout of this
repository (a worktree of an earlier commit, say), so two versions of the code are measured side
by side.
The server's CPU per image (its process tree's CPU time over the images it answered) is shown
for the concurrency 16 level.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.models import DEFAULT_WEIGHTS, ensure_model
from benchmarks.photos import PHONE_SIZE, WEB_SIZE, Photo, make_photo_set
from benchmarks.procs import Server, free_port, start_server, tree_cpu_seconds, tree_memory_bytes
from benchmarks.report import save_table
from benchmarks.run import FULL, Counts, run_level, service_env

MiB = 1024 * 1024
SERVICE = [sys.executable, "-m", "service"]
UVICORN = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
UVICORN += ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]


@dataclass(frozen=True)
class Config:
    env: dict[str, str] = field(default_factory=dict)  # EFFICIENTNET_* and malloc settings
    command: tuple[str, ...] = tuple(SERVICE)  # the plain uvicorn CLI also takes --port


# The service caps glibc's arenas at 2 itself (service/memory.py) unless MALLOC_ARENA_MAX is
# set; 16 is glibc's own default on 2 cores (8 x cores), i.e. "uncapped".
UNCAPPED = {"MALLOC_ARENA_MAX": "16"}
CONFIGS: dict[str, Config] = {
    "service defaults": Config(),
    "old defaults: batch 8, 1 run, arenas uncapped": Config(
        {"EFFICIENTNET_MAX_BATCH_SIZE": "8", "EFFICIENTNET_INFERENCE_WORKERS": "1", **UNCAPPED}
    ),
    "1 run in flight": Config({"EFFICIENTNET_INFERENCE_WORKERS": "1"}),
    "intra-op 1": Config({"EFFICIENTNET_INTRA_OP_THREADS": "1"}),
    "arenas uncapped": Config(UNCAPPED),
    "MALLOC_MMAP_THRESHOLD_=128K": Config(
        {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    ),
    "max batch 1": Config({"EFFICIENTNET_MAX_BATCH_SIZE": "1"}),
    "max batch 2": Config({"EFFICIENTNET_MAX_BATCH_SIZE": "2"}),
    "max batch 4": Config({"EFFICIENTNET_MAX_BATCH_SIZE": "4"}),
    "preprocess pool 1": Config({"EFFICIENTNET_PREPROCESS_THREADS": "1"}),
    # glibc gives each thread that mallocs its own arena; fewer arenas, less resident memory.
    "MALLOC_ARENA_MAX=2": Config({"MALLOC_ARENA_MAX": "2"}),
    "uvicorn CLI, uvloop + httptools": Config(
        command=(*UVICORN, "--loop", "uvloop", "--http", "httptools")
    ),
    "uvicorn CLI, asyncio + h11": Config(command=(*UVICORN, "--loop", "asyncio", "--http", "h11")),
    # Two server processes sharing the port (uvicorn's --workers), each its own GIL and model,
    # sized so that the two together use what one service does: the ceiling of a multi-process
    # service (the plain CLI: no edge bounds; metrics and swaps would be per process).
    "uvicorn CLI, 2 processes of 1 thread": Config(
        {
            "EFFICIENTNET_INTRA_OP_THREADS": "1",
            "EFFICIENTNET_INFERENCE_WORKERS": "1",
            "EFFICIENTNET_PREPROCESS_THREADS": "1",
        },
        command=(*UVICORN, "--loop", "uvloop", "--http", "httptools", "--workers", "2"),
    ),
    "uvicorn CLI, 2 processes, intra-op 1": Config(
        {"EFFICIENTNET_INTRA_OP_THREADS": "1"},
        command=(*UVICORN, "--loop", "uvloop", "--http", "httptools", "--workers", "2"),
    ),
}


def checkout_config(directory: Path) -> Config:
    """The service's defaults, its code imported from ``directory`` (another checkout).

    Through PYTHONPATH, not a ``sys.path`` edit, so the decode workers' forkserver imports the
    same checkout; ``-P`` keeps the working directory (this checkout) off the path."""
    root = str(directory.resolve())
    return Config(env={"PYTHONPATH": root}, command=(sys.executable, "-P", "-m", "service"))


# The round that set today's CPU defaults (BENCHMARKS.md, "Service settings applied").
DEFAULT_CONFIGS = [
    "service defaults",
    "old defaults: batch 8, 1 run, arenas uncapped",
    "1 run in flight",
    "intra-op 1",
    "arenas uncapped",
    "MALLOC_MMAP_THRESHOLD_=128K",
]


@dataclass(frozen=True)
class Plan:
    """What each configuration is measured on, the same for all of them."""

    variant: str
    model: Path
    web: list[Photo]
    phone: list[Photo]  # empty: no phone level
    levels: tuple[int, ...]
    counts: Counts
    base_env: dict[str, str]
    log: Path


def measure(name: str, config: Config, plan: Plan) -> dict[str, float]:
    port = free_port()
    env = service_env(plan.variant, plan.model, port, {**plan.base_env, **config.env})
    # python -m service reads EFFICIENTNET_PORT; the uvicorn CLI needs the flag.
    uvicorn_cli = config.command[: len(UVICORN)] == tuple(UVICORN)
    argv = [*config.command] + (["--port", str(port)] if uvicorn_cli else [])
    server = start_server(name, argv, port, env, plan.log)
    try:
        return _load(server, plan)
    finally:
        server.stop()


def _load(server: Server, plan: Plan) -> dict[str, float]:
    figures: dict[str, float] = {"errors": 0}
    for level in plan.levels:
        cpu_before = tree_cpu_seconds(server.process.pid)
        result = run_level(server, plan.web, level, plan.counts)
        served = result.get("count", 0) + result.get("warmup", 0)
        cpu_ms = 1e3 * (tree_cpu_seconds(server.process.pid) - cpu_before) / max(served, 1)
        figures[f"c{level} CPU ms/img"] = cpu_ms
        figures[f"c{level}"] = result.get("throughput", 0.0)
        figures[f"c{level} p50 ms"] = result.get("p50_ms", 0.0)
        figures[f"c{level} p99 ms"] = result.get("p99_ms", 0.0)
        figures["errors"] += int(result.get("errors", 0))
    figures["web peak MB"] = tree_memory_bytes(server.process.pid, "VmHWM") / MiB
    if plan.phone:
        result = run_level(server, plan.phone, 16, plan.counts)
        figures["phone c16"] = result.get("throughput", 0.0)
        figures["errors"] += int(result.get("errors", 0))
        figures["peak MB"] = tree_memory_bytes(server.process.pid, "VmHWM") / MiB
    return figures


def columns(levels: tuple[int, ...], phone: bool) -> list[str]:
    cols = [f"c{n}" for n in levels]
    cols += ["c1 p50 ms"] if 1 in levels else []
    cols += ["c16 p99 ms", "c16 CPU ms/img"] if 16 in levels else []
    cols += ["phone c16", "web peak MB", "peak MB"] if phone else ["web peak MB"]
    return [*cols, "errors"]


def table(variant: str, samples: dict[str, list[dict[str, float]]], cols: list[str]) -> str:
    def median(name: str, col: str) -> float:
        return statistics.median(r[col] for r in samples[name])

    first = next(iter(samples))
    ratio = "c16" in cols and median(first, "c16") > 0
    head = [h for c in cols for h in ([c, "c16 vs first"] if c == "c16" and ratio else [c])]
    lines = [f"| {variant}: setting | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for name in samples:
        cells = {c: f"{median(name, c):.1f}" for c in cols}
        cells["errors"] = f"{sum(int(r['errors']) for r in samples[name])}"
        if ratio:
            cells["c16 vs first"] = f"{median(name, 'c16') / median(first, 'c16'):.2f}"
        lines.append(f"| {name} | " + " | ".join(cells[c] for c in head) + " |")
    return "\n".join(lines) + "\n"


def key_values(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The options of every tool that runs the service side by side with other checkouts."""
    parser.add_argument(
        "--checkout", nargs="+", default=[], metavar="NAME=DIR",
        help="also the service's defaults from another checkout of this repository",
    )  # fmt: skip
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/bench-models"))
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=150, help="per level (at most)")
    parser.add_argument("--level-seconds", type=float, default=8.0, help="per level (at most)")
    parser.add_argument("--no-phone", action="store_true", help="web photos only")
    parser.add_argument("--service-env", nargs="+", default=[], metavar="KEY=VALUE")
    add_server_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model = ensure_model(args.variant, DEFAULT_WEIGHTS.get(args.variant, "random"), args.models_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sizes = (WEB_SIZE,) if args.no_phone else (WEB_SIZE, PHONE_SIZE)
    photos = make_photo_set(args.out_dir / "lever-photos", sizes=sizes)
    counts = dataclasses.replace(FULL, requests=args.requests, level_seconds=args.level_seconds)
    plan = Plan(
        variant=args.variant,
        model=model,
        web=[p for p in photos if p.size == WEB_SIZE],
        phone=[p for p in photos if p.size == PHONE_SIZE],
        levels=tuple(args.levels),
        counts=counts,
        base_env=key_values(args.service_env),
        log=args.out_dir / "service-levers.log",
    )
    configs = {name: CONFIGS[name] for name in args.configs}
    for name, directory in key_values(args.checkout).items():
        configs[name] = checkout_config(Path(directory))
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, config in configs.items():
            figures = measure(name, config, plan)
            samples[name].append(figures)
            print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
    md = table(args.variant, samples, columns(plan.levels, bool(plan.phone)))
    save_table(md, args.out_dir, f"service-levers-{args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
