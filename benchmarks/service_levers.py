"""The service's batching, runs-in-flight and malloc settings over HTTP, with memory: each
configuration is its own `python -m service` process, loaded with web photos at concurrency
1, 4, 16 and 64 and then with phone photos at 16 (the peak-RSS level), round-robin over rounds.

    python -m benchmarks.service_levers [--variant b0] [--rounds 2] [--configs NAME ...]

Prints a markdown table of the median round per configuration (images/s per level, peak RSS
after the web levels and after the phone level: the kernel's VmHWM of the process tree).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from benchmarks.models import DEFAULT_WEIGHTS, ensure_model
from benchmarks.photos import PHONE_SIZE, WEB_SIZE, make_photo_set
from benchmarks.procs import free_port, start_server, tree_hwm_bytes
from benchmarks.run import FULL, run_level, service_env

WEB_LEVELS = (1, 4, 16, 64)
MiB = 1024 * 1024
# The service caps glibc's arenas at 2 itself (service/memory.py) unless MALLOC_ARENA_MAX is
# set; 16 is glibc's own default on 2 cores (8 x cores), i.e. "uncapped".
UNCAPPED = {"MALLOC_ARENA_MAX": "16"}
CONFIGS: dict[str, dict[str, str]] = {
    "service defaults": {},
    "old defaults: batch 8, 1 run, arenas uncapped": {
        "EFFICIENTNET_MAX_BATCH_SIZE": "8",
        "EFFICIENTNET_INFERENCE_WORKERS": "1",
        **UNCAPPED,
    },
    "1 run in flight": {"EFFICIENTNET_INFERENCE_WORKERS": "1"},
    "2 runs, intra-op 1": {"EFFICIENTNET_INTRA_OP_THREADS": "1"},
    "arenas uncapped": UNCAPPED,
    "MALLOC_MMAP_THRESHOLD_=128K": {
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "MALLOC_TRIM_THRESHOLD_": "131072",
    },
}


def measure(name: str, variant: str, model: Path, web, phone, log: Path) -> dict[str, float]:
    port = free_port()
    env = service_env(variant, model, port, CONFIGS[name])
    server = start_server(name, [sys.executable, "-m", "service"], port, env, log)
    counts = dataclasses.replace(FULL, requests=150, level_seconds=8.0)
    try:
        figures = {f"c{n}": run_level(server, web, n, counts)["throughput"] for n in WEB_LEVELS}
        figures["web peak MB"] = tree_hwm_bytes(server.process.pid) / MiB
        figures["phone c16"] = run_level(server, phone, 16, counts)["throughput"]
        figures["peak MB"] = tree_hwm_bytes(server.process.pid) / MiB
        return figures
    finally:
        server.stop()


def table(variant: str, samples: dict[str, list[dict[str, float]]]) -> str:
    columns = [f"c{n}" for n in WEB_LEVELS] + ["phone c16", "web peak MB", "peak MB"]
    lines = [
        f"| {variant}: setting | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, rounds in samples.items():
        cells = [f"{statistics.median(r[c] for r in rounds):.1f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    model = ensure_model(args.variant, DEFAULT_WEIGHTS.get(args.variant, "random"),
                         Path("artifacts/bench-models"))  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    photos = make_photo_set(args.out_dir / "lever-photos-all")
    web = [p for p in photos if p.size == WEB_SIZE]
    phone = [p for p in photos if p.size == PHONE_SIZE]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in args.configs}
    for _ in range(args.rounds):
        for name in args.configs:
            figures = measure(name, args.variant, model, web, phone, args.out_dir / "sl.log")
            samples[name].append(figures)
            print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
    md = table(args.variant, samples)
    print(md)
    path = args.out_dir / f"service-levers-{args.variant}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(md)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
