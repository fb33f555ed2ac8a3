"""`make bench-peers`: the service side by side with NVIDIA Triton, TorchServe, BentoML and
LitServe on the same photos, weights and thread budget, in one run; writes
artifacts/peers-<time>.{md,json}.

    python -m benchmarks.peers                      # full run (b0 + lite0, every peer)
    python -m benchmarks.peers --quick --peers none # the dry run tests/benchmarks runs

Every server is started once per variant and stays up (idle when not measured: none of them
spins); the endpoints take turns level by level, `rounds` times, and each figure is the best
round (every round is in the JSON). The load generator, photos, process accounting and
statistics are `make bench`'s own (benchmarks.loadgen, photos, procs, stats).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import conditions, load_average
from benchmarks.models import DEFAULT_WEIGHTS, ensure_model, read_metadata
from benchmarks.peers.catalog import (
    STARTERS,
    Context,
    Endpoint,
    Started,
    Tuning,
    start_service,
    stop_tree,
)
from benchmarks.peers.report import Measured, render, targets
from benchmarks.photos import PHONE_SIZE, WEB_SIZE, Photo, make_photo_set
from benchmarks.procs import RssSampler, tree_cpu_seconds, tree_memory_bytes
from benchmarks.report import CONCURRENCY_LEVELS, HEADLINE_CONCURRENCY
from benchmarks.run import _key_value, best_of
from model_contract import Preprocessing
from service.pipeline.decode.image import preprocess

MB = 1024 * 1024
# Ours that are always measured: the reference, and its like-for-like row for client tensors.
OURS = ("service", "service /v2 uint8 tensors")


@dataclass(frozen=True)
class Counts:
    requests: int  # per level, at most (at least the level itself)
    level_seconds: float  # per level, at most
    warmup_per_connection: int
    rounds: int


# Sized so that the full run fits well in 20 min: 12.1 min measured with 9 endpoints (2
# variants); LitServe's endpoint adds about 1 min (5 loads x 3 s x 2 rounds x 2 variants).
FULL = Counts(requests=1000, level_seconds=3.0, warmup_per_connection=1, rounds=2)
QUICK = Counts(requests=4, level_seconds=5.0, warmup_per_connection=0, rounds=1)


def tensor_files(web: list[Photo], spec: dict[str, Any], out_dir: Path) -> list[Path]:
    """The web photos as the client-preprocessed uint8 tensors (raw HWC bytes), made with the
    service's own preprocessing: what a Triton client sends instead of the JPEG."""
    pre = Preprocessing.model_validate(spec)
    paths = []
    for photo in web:
        path = out_dir / f"{photo.path.stem}.u8"
        path.write_bytes(np.ascontiguousarray(preprocess(photo.data, pre, 50_000_000)).tobytes())
        paths.append(path)
    return paths


def measure(
    started: Started,
    endpoint: Endpoint,
    files: list[Path],
    level: int,
    counts: Counts,
    crop: int,
) -> dict[str, Any]:
    """One closed-loop level against one endpoint, with the server tree's CPU and RSS."""
    server = started.server
    argv = [sys.executable, "-m", "benchmarks.loadgen", "--url", server.base_url + endpoint.path]
    for path in files:
        argv += ["--file", str(path)]
    argv += [
        "--format",
        endpoint.fmt,
        "--field",
        endpoint.field,
        "--tensor-shape",
        f"{crop},{crop},3",
        "--concurrency",
        str(level),
        "--requests",
        str(max(counts.requests, level)),
        "--max-seconds",
        str(counts.level_seconds),
        "--warmup",
        str(level * counts.warmup_per_connection),
    ]
    cpu_before = tree_cpu_seconds(server.process.pid)
    with RssSampler(server.process.pid) as sampler:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if not done.stdout.strip():
        raise RuntimeError(f"load generator failed against {endpoint.name}: {done.stderr[-2000:]}")
    figures = dict(json.loads(done.stdout))
    served = figures.get("count", 0) + figures.get("warmup", 0)
    cpu_s = tree_cpu_seconds(server.process.pid) - cpu_before
    figures["server_cpu_ms_per_request"] = 1e3 * cpu_s / max(served, 1)
    figures["rss_mb_during"] = sampler.peak_bytes / MB
    figures["peak_rss_mb"] = (
        max(sampler.peak_bytes, tree_memory_bytes(server.process.pid, "VmHWM")) / MB
    )
    return figures


def workloads_of(endpoint: Endpoint, levels: tuple[int, ...]) -> list[tuple[str, int]]:
    runs = [("web", level) for level in levels]
    return runs + ([("phone", HEADLINE_CONCURRENCY)] if endpoint.phone else [])


def _brief(f: dict[str, Any]) -> str:
    text = f"{f.get('throughput', 0):.1f} img/s"
    if f.get("count"):
        text += f", p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms"
        text += f", server CPU {f['server_cpu_ms_per_request']:.1f} ms/img"
    if f.get("errors"):
        text += f", {f['errors']} errors ({f.get('first_error')})"
    return text


def counts_of(args: argparse.Namespace) -> Counts:
    counts = QUICK if args.quick else FULL
    if args.rounds:
        counts = replace(counts, rounds=args.rounds)
    if args.level_seconds:
        counts = replace(counts, level_seconds=args.level_seconds)
    return counts


def run_variant(
    variant: str,
    args: argparse.Namespace,
    photos: dict[str, list[Path]],
    work_dir: Path,
    log_dir: Path,
) -> dict[str, Any]:
    counts = counts_of(args)
    levels = tuple(args.levels)
    weights = DEFAULT_WEIGHTS.get(variant, "random")
    model = ensure_model(variant, weights, args.models_dir)
    meta = read_metadata(model)
    crop = int(meta["preprocessing"]["crop_size"])  # type: ignore[index]
    print(f"== {variant} ({weights} weights): {model}", flush=True)
    tuning = replace(Tuning(), **dict(args.tune))
    ctx = Context(variant, model, meta, work_dir, log_dir, tuning, dict(args.service_env))
    files = dict(photos)
    files["uint8"] = tensor_files(
        [Photo(p.stem, WEB_SIZE, p, p.read_bytes()) for p in photos["web"]],
        meta["preprocessing"],  # type: ignore[arg-type]
        work_dir,
    )
    running: list[Started] = []
    rounds: dict[str, list[dict[str, dict[str, Any]]]] = {}
    try:
        # Each start-up is timed with the servers started before it idle.
        running.append(start_service(ctx))
        for peer in args.peers:
            running.append(STARTERS[peer](ctx))
        for started in running:
            print(f"  {started.server.name} ready in {started.server.ready_s:.2f} s", flush=True)
        plan = [(s, e) for s in running for e in s.endpoints if wanted(s, e, args)]
        for r in range(counts.rounds):
            print(f"  round {r + 1}/{counts.rounds} at {time.strftime('%H:%M:%S')}", flush=True)
            for started, endpoint in plan:
                figures = {}
                for workload, level in workloads_of(endpoint, levels):
                    key = f"{workload} c{level}"
                    chosen = files["uint8"] if endpoint.kind == "uint8" else files[workload]
                    figures[key] = measure(started, endpoint, chosen, level, counts, crop)
                    print(f"    {endpoint.name} {key}: {_brief(figures[key])}", flush=True)
                rounds.setdefault(endpoint.name, []).append(figures)
    finally:
        for started in running:
            stop_tree(started.server)
    measured = [
        Measured(
            e.name,
            s.server.name,
            e.kind,
            s.server.ready_s,
            best_of(rounds[e.name]),
            rounds[e.name],
            s.versions,
            s.settings,
        )
        for s, e in plan
    ]
    return {"variant": variant, "weights": weights, "measured": measured}


def wanted(started: Started, endpoint: Endpoint, args: argparse.Namespace) -> bool:
    if started.server.name != "service":
        return True
    return endpoint.name in OURS or args.stand_ins


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="the service against Triton, TorchServe, BentoML, LitServe"
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: a dry run")
    parser.add_argument("--variants", default="b0,lite0", help="comma-separated")
    parser.add_argument(
        "--peers",
        default=",".join(STARTERS),
        type=_peer_list,
        help=f"comma-separated, of {', '.join(STARTERS)}; 'none' for the service alone",
    )
    parser.add_argument(
        "--stand-ins",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the service in the peers' request shapes: /v2 JPEG bytes (Triton's) "
        "and /classify raw body (TorchServe's); like-for-like rows, and what the dry run drives",
    )
    parser.add_argument(
        "--tune", action="append", default=[], type=_tuning, metavar="NAME=VALUE",
        help=f"a peer's batching setting, of: {', '.join(f.name for f in fields(Tuning))}",
    )  # fmt: skip
    parser.add_argument(
        "--service-env", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
        help="an EFFICIENTNET_* setting for the service (a lever against a peer)",
    )  # fmt: skip
    parser.add_argument("--levels", type=int, nargs="+", default=list(CONCURRENCY_LEVELS))
    parser.add_argument("--rounds", type=int, help="override the rounds (full: 2, quick: 1)")
    parser.add_argument("--level-seconds", type=float, help="override each level's time cap")
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/bench-models"))
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--fail-on-target", action="store_true", help="exit 1 on any FAIL")
    return parser.parse_args(argv)


def _tuning(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or name not in {f.name for f in fields(Tuning)} or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER with a Tuning field, got {text!r}")
    return name, int(value)


def _peer_list(text: str) -> list[str]:
    names = [] if text == "none" else [t for t in text.split(",") if t]
    unknown = [n for n in names if n not in STARTERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {unknown}; known: {list(STARTERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.peers " + " ".join(sys.argv[1:] if argv is None else argv)
    cond = conditions()
    start = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = args.out_dir / "peers-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        made = make_photo_set(Path(tmp) / "photos")
        photos = {
            "web": [p.path for p in made if p.size == WEB_SIZE],
            "phone": [p.path for p in made if p.size == PHONE_SIZE],
        }
        for variant in args.variants.split(","):
            results.append(run_variant(variant, args, photos, Path(tmp), log_dir))
    checked = [t for r in results for t in targets(r["variant"], r["measured"])]
    counts = counts_of(args)
    cond["load_average_at_end"] = load_average()
    wall_s = time.perf_counter() - start
    md = render(results, checked, cond, command.strip(), wall_s, counts, tuple(args.levels))
    md_path = args.out_dir / f"peers-{stamp}.md"
    md_path.write_text(md + "\n")
    payload = {
        "conditions": cond,
        "command": command.strip(),
        "counts": asdict(counts),
        "tuning": asdict(replace(Tuning(), **dict(args.tune))),
        "service_env": dict(args.service_env),
        "wall_s": wall_s,
        "results": [{**r, "measured": [asdict(m) for m in r["measured"]]} for r in results],
        "targets": [{**asdict(t), "passed": t.passed} for t in checked],
    }
    md_path.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print(md)
    print(f"written: {md_path} and {md_path.with_suffix('.json')}")
    return 1 if args.fail_on_target and not all(t.passed for t in checked) else 0
