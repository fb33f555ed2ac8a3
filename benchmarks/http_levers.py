"""Service settings side by side over HTTP: each configuration is started as its own process
and loaded at concurrency 1 and 16 with web-size photos, round-robin over several rounds so
that load from elsewhere on the machine hits every configuration alike.

    python -m benchmarks.http_levers [--variant b0] [--rounds 2] [--requests 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from benchmarks.models import DEFAULT_WEIGHTS, ensure_model
from benchmarks.photos import WEB_SIZE, make_photo_set
from benchmarks.procs import free_port, start_server, tree_hwm_bytes
from benchmarks.run import FULL, run_level, service_env

UVICORN = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
UVICORN += ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]

# name → (extra EFFICIENTNET_* settings, server command or None for `python -m service`)
CONFIGS: dict[str, tuple[dict[str, str], list[str] | None]] = {
    "service defaults": ({}, None),
    "max batch 1": ({"EFFICIENTNET_MAX_BATCH_SIZE": "1"}, None),
    "max batch 2": ({"EFFICIENTNET_MAX_BATCH_SIZE": "2"}, None),
    "max batch 4": ({"EFFICIENTNET_MAX_BATCH_SIZE": "4"}, None),
    "intra-op 1": ({"EFFICIENTNET_INTRA_OP_THREADS": "1"}, None),
    "preprocess pool 1": ({"EFFICIENTNET_PREPROCESS_THREADS": "1"}, None),
    # glibc gives each thread that mallocs its own arena; fewer arenas, less resident memory.
    "MALLOC_ARENA_MAX=2": ({"MALLOC_ARENA_MAX": "2"}, None),
    "uvicorn CLI, uvloop + httptools": ({}, [*UVICORN, "--loop", "uvloop", "--http", "httptools"]),
    "uvicorn CLI, asyncio + h11": ({}, [*UVICORN, "--loop", "asyncio", "--http", "h11"]),
}


def measure(name: str, variant: str, model: Path, photos, requests: int, log_dir: Path):
    extra, command = CONFIGS[name]
    port = free_port()
    env = service_env(variant, model, port, extra)
    argv = [*command, "--port", str(port)] if command else [sys.executable, "-m", "service"]
    server = start_server(name, argv, port, env, log_dir / "http-levers.log")
    counts = dataclasses.replace(FULL, requests=requests, level_seconds=30.0)
    try:
        figures = {level: run_level(server, photos, level, counts) for level in (1, 16)}
        figures[16]["peak_rss_mb"] = tree_hwm_bytes(server.process.pid) / (1024 * 1024)
        return figures
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    model = ensure_model(args.variant, DEFAULT_WEIGHTS.get(args.variant, "random"),
                         Path("artifacts/bench-models"))  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    photos = make_photo_set(args.out_dir / "lever-photos", sizes=(WEB_SIZE,))
    samples: dict[str, list[dict[int, dict]]] = {name: [] for name in args.configs}
    for _ in range(args.rounds):
        for name in args.configs:
            figures = measure(name, args.variant, model, photos, args.requests, args.out_dir)
            samples[name].append(figures)
            print(f"  {name}: c1 p50 {figures[1].get('p50_ms', 0):.1f} ms, "
                  f"c16 {figures[16].get('throughput', 0):.1f} img/s", flush=True)  # fmt: skip
    md = table(args.variant, samples)
    print(md)
    path = args.out_dir / f"http-levers-{args.variant}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(md)
    print(f"written: {path}")
    return 0


def table(variant: str, samples: dict[str, list[dict[int, dict]]]) -> str:
    def median(name: str, level: int, key: str) -> float:
        return statistics.median(float(s[level].get(key, 0.0)) for s in samples[name])

    first = next(iter(samples))
    base_tput, base_p50 = median(first, 16, "throughput"), median(first, 1, "p50_ms")
    lines = [
        f"#### {variant}: service settings over HTTP (web photos, median of rounds)",
        "",
        "| setting | c16 images/s | vs first | c16 p99 ms | c1 p50 ms | vs first | peak RSS MB "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in samples:
        tput, p50 = median(name, 16, "throughput"), median(name, 1, "p50_ms")
        errors = sum(int(s[level].get("errors", 0)) for s in samples[name] for level in (1, 16))
        lines.append(
            f"| {name} | {tput:.1f} | {tput / base_tput:.2f} | {median(name, 16, 'p99_ms'):.0f} "
            f"| {p50:.1f} | {base_p50 / p50:.2f} | {median(name, 16, 'peak_rss_mb'):.0f} "
            f"| {errors} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
