"""Where the CPU goes under load: the event loop's and the whole server's CPU per image, and the
machine's idle CPU, at one concurrency, with the in-process pipeline beside the servers.

``loop_cost`` measures requests one at a time; under load the loop's work per request is
smaller (no wake-up from idle per request) and what decides throughput is how much of the two
cores the server spends outside decoding and inference, and how much it leaves idle. Each round
runs, one after the other and on the same photos: the in-process pipeline (the limit: its
images/s and the machine's idle CPU), then each server under closed-loop load (its images/s,
its event-loop thread's CPU per image from ``/proc/<pid>/task/<pid>/schedstat``, its process
tree's CPU per image, the machine's idle CPU from ``/proc/stat``).

    python -m benchmarks.load_cost [--variant lite0] [--concurrency 16] [--rounds 6]
    git worktree add ../before HEAD~1
    python -m benchmarks.load_cost --checkout before=../before

The table shows the median round of each; every round is printed as it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import inprocess
from benchmarks.loadgen import Upload, make_upload, run_load
from benchmarks.models import DEFAULT_WEIGHTS, ensure_model
from benchmarks.photos import WEB_SIZE, Photo, make_photo_set
from benchmarks.procs import Server, free_port, main_thread_cpu_ns, start_server, tree_cpu_seconds
from benchmarks.report import save_table
from benchmarks.run import FULL, Counts, InProcess, run_inprocess, service_env
from benchmarks.service_levers import add_server_options, checkout_config, key_values

LIMIT = "in-process pipeline"


@dataclass(frozen=True)
class Sample:
    images_per_s: float
    idle_pct: float  # the whole machine's
    loop_ms: float | None = None  # per image: the server's event-loop thread
    tree_ms: float | None = None  # per image: every thread and process of the server


class MachineIdle:
    """The machine's idle share between ``start`` and ``stop``, from /proc/stat."""

    @staticmethod
    def _ticks() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    def __enter__(self) -> MachineIdle:
        self._total, self._idle = self._ticks()
        return self

    def __exit__(self, *_: object) -> None:
        total, idle = self._ticks()
        self.pct = 100.0 * (idle - self._idle) / max(1, total - self._total)


def _limit(ip: InProcess, photos: list[Photo], counts: Counts) -> Sample:
    """The in-process pipeline as ``make bench`` measures it, with the machine's idle share."""
    with MachineIdle() as idle:
        figures = run_inprocess(ip, photos, [], counts, ("pipelined",))
    return Sample(float(figures["pipelined"]["throughput"]), idle.pct)


def _server(server: Server, uploads: list[Upload], concurrency: int, requests: int) -> Sample:
    pid = server.process.pid
    url = server.base_url + "/classify"
    loop, tree = main_thread_cpu_ns(pid), tree_cpu_seconds(pid)
    with MachineIdle() as idle:
        result = asyncio.run(run_load(url, uploads, concurrency, requests, 60.0, concurrency))
    served = int(result["count"]) + concurrency  # and the warm-up
    return Sample(
        float(result["throughput"]),
        idle.pct,
        (main_thread_cpu_ns(pid) - loop) / 1e6 / served,
        1e3 * (tree_cpu_seconds(pid) - tree) / served,
    )


def table(variant: str, concurrency: int, samples: dict[str, list[Sample]]) -> str:
    lines = [
        f"| {variant} web c{concurrency} | images/s | / {LIMIT} | machine idle % | "
        "event loop CPU ms/img | server CPU ms/img |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    limit = statistics.median(s.images_per_s for s in samples[LIMIT])
    for name, rounds in samples.items():

        def median(field: str, rounds: list[Sample] = rounds) -> float | None:
            values = [getattr(s, field) for s in rounds if getattr(s, field) is not None]
            return statistics.median(values) if values else None

        rate, loop, tree = median("images_per_s"), median("loop_ms"), median("tree_ms")
        assert rate is not None
        lines.append(
            f"| {name} | {rate:.1f} | {rate / limit:.3f} | {median('idle_pct'):.1f} | "
            + (f"{loop:.3f} | {tree:.2f} |" if loop is not None and tree is not None else " |  |")
        )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="lite0")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=400, help="images per measurement")
    add_server_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    model = ensure_model(args.variant, DEFAULT_WEIGHTS.get(args.variant, "random"), args.models_dir)
    photos = make_photo_set(args.out_dir / "lever-photos", sizes=(WEB_SIZE,))
    uploads = [make_upload(p.path, "multipart", "file", []) for p in photos]
    commands = {"this checkout": ((sys.executable, "-m", "service"), {})}
    for name, directory in key_values(args.checkout).items():
        config = checkout_config(Path(directory))
        commands[name] = (config.command, config.env)
    servers: dict[str, Server] = {}
    samples: dict[str, list[Sample]] = {LIMIT: [], **{name: [] for name in commands}}
    try:
        for name, (command, env) in commands.items():
            port = free_port()
            environment = {**service_env(args.variant, model, port, {}), **env}
            log = args.out_dir / "load-cost.log"
            servers[name] = start_server(name, list(command), port, environment, log)
        ip = InProcess(*inprocess.open_session(service_env(args.variant, model, 0, {})))
        counts = dataclasses.replace(FULL, requests=args.requests, level_seconds=60.0)
        for server in servers.values():  # warm: the first loads allocate
            _server(server, uploads, args.concurrency, 2 * args.concurrency)
        for r in range(args.rounds):
            samples[LIMIT].append(_limit(ip, photos, counts))
            # The servers' order turns every round: neither is always the one measured last.
            order = list(servers.items())
            for name, server in order[r % len(order) :] + order[: r % len(order)]:
                samples[name].append(_server(server, uploads, args.concurrency, args.requests))
            print(f"round {r + 1}: " + "; ".join(f"{k} {v[-1]}" for k, v in samples.items()))
    finally:
        for server in servers.values():
            server.stop()
    md = table(args.variant, args.concurrency, samples)
    save_table(md, args.out_dir, f"load-cost-{args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
