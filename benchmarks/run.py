"""`make bench`: the limit, the service over HTTP and the PyTorch-eager alternative, side by
side in one run, with every target (benchmarks/report.py) checked. Writes
artifacts/bench-<time>.{md,json}.

    python -m benchmarks                 # full run (~10 min on 2 cores)
    python -m benchmarks --quick         # tiny counts: checks the harness end to end
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import inprocess, speed_probe
from benchmarks.machine import conditions, load_average
from benchmarks.models import DEFAULT_WEIGHTS, ensure_model
from benchmarks.photos import PHONE_SIZE, WEB_SIZE, Photo, make_photo_set
from benchmarks.procs import (
    RssSampler,
    Server,
    free_port,
    python_argv,
    start_server,
    tree_cpu_seconds,
    tree_memory_bytes,
)
from benchmarks.report import (
    CONCURRENCY_LEVELS,
    HEADLINE_CONCURRENCY,
    PHONE_LEVELS,
    ServerResult,
    VariantResult,
    evaluate,
    figures_table,
    targets_table,
)
from benchmarks.stats import RunStats
from service.config import Settings
from service.pipeline.session import ModelSession

MB = 1024 * 1024


@dataclass(frozen=True)
class Counts:
    """How much each measurement does; every one is bounded by count and by time.

    The in-process limit and each server level measure the same number of images under the same
    time bound: the best of a few rounds is kept, and a shorter run swings wider, so its best
    round would sit higher for no reason but its length (40 phone photos in-process, 1.6 s,
    against 150 over HTTP, 7 s, favoured the limit).
    """

    ort: int
    decode_repeats: int
    requests: int  # per measurement: an in-process run or a level (at least the level itself)
    level_seconds: float
    warmup_per_connection: int
    rounds: int  # every measurement is repeated, interleaved; the best round is kept


# Five rounds: on this machine one round's ratio of the same code to the same limit ranged from
# 0.76 to 1.12 in one run (BENCHMARKS.md, "Five rounds"); a median of three is set by one
# disturbed round whenever another is disturbed the other way.
FULL = Counts(
    ort=150, decode_repeats=5, requests=150, level_seconds=10.0, warmup_per_connection=1, rounds=5
)
QUICK = Counts(
    ort=6, decode_repeats=1, requests=4, level_seconds=10.0, warmup_per_connection=0, rounds=1
)


def service_env(variant: str, model: Path, port: int, extra: dict[str, str]) -> dict[str, str]:
    env = {
        "EFFICIENTNET_VARIANT": variant,
        "EFFICIENTNET_MODEL_PATH": str(model),
        "EFFICIENTNET_DEVICE": "cpu",
        "EFFICIENTNET_HOST": "127.0.0.1",
        "EFFICIENTNET_PORT": str(port),
        "EFFICIENTNET_LOG_LEVEL": "warning",
    }
    return {**env, **extra}


@dataclass
class InProcess:
    """The service's own session and settings, opened once in this process."""

    session: ModelSession
    settings: Settings

    @property
    def resolved(self) -> dict[str, Any]:
        policy = self.settings.batch_policy(self.session.provider)
        return {
            "provider": self.session.provider,
            "preprocess pool": self.settings.thread_counts()[0],
            "intra-op threads": self.settings.thread_counts()[1],
            "max batch": policy.max_batch_size,
            "max batch delay ms": policy.max_delay_ms,
            "runs in flight": policy.workers,
        }


def run_inprocess(
    ip: InProcess, web: list[Photo], phone: list[Photo], counts: Counts, which: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """The in-process measurements named in ``which`` (report.INPROCESS_ROWS' keys)."""
    session, settings = ip.session, ip.settings
    spec, max_px = session.metadata.preprocessing, settings.max_image_pixels
    workers, _ = settings.thread_counts()
    policy = settings.batch_policy(session.provider)
    max_batch, runs = policy.max_batch_size, policy.workers
    count, secs = counts.requests, counts.level_seconds
    measurements: dict[str, Callable[[], RunStats]] = {
        "sequential": lambda: inprocess.sequential(session, web, spec, max_px, count, secs),
        "pipelined": lambda: inprocess.pipelined(
            session, web, spec, max_px, workers, count, secs, max_batch, runs
        ),
        "ort_batch1": lambda: inprocess.ort_alone(
            session, inprocess.preprocessed(web, spec, max_px), 1, counts.ort, secs
        ),
        "pipelined_phone": lambda: inprocess.pipelined(
            session, phone, spec, max_px, workers, count, secs, max_batch, runs
        ),
    }
    return {name: measurements[name]().as_dict() for name in which}


def round_steps(levels: tuple[int, ...]) -> list[tuple[tuple[str, ...], list[tuple[str, int]]]]:
    """A round as steps: an in-process measurement, then at once the server loads that the
    targets compare with it (report.evaluate), so that the two sides of each comparison run
    seconds apart rather than a minute: the single-image latency before c1 (and c4), the
    pipeline and ORT alone before c16 and c64, the phone pipeline before the phone levels."""
    return [
        (("sequential",), [("web", level) for level in levels if level < HEADLINE_CONCURRENCY]),
        (("pipelined", "ort_batch1"),
         [("web", level) for level in levels if level >= HEADLINE_CONCURRENCY]),
        (("pipelined_phone",), [("phone", level) for level in PHONE_LEVELS]),
    ]  # fmt: skip


def run_level(server: Server, photos: list[Photo], level: int, counts: Counts) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.loadgen", "--url", server.base_url + "/classify"]
    for photo in photos:
        argv += ["--file", str(photo.path)]
    argv += [
        "--concurrency", str(level),
        "--requests", str(max(counts.requests, level)),
        "--max-seconds", str(counts.level_seconds),
        "--warmup", str(level * counts.warmup_per_connection),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if not done.stdout.strip():
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def load_server(
    server: Server,
    workloads: dict[str, list[Photo]],
    counts: Counts,
    runs: list[tuple[str, int]],
) -> dict[str, dict[str, Any]]:
    """Each (workload, level) of ``runs``, keyed 'web c<level>' / 'phone c<level>', each with
    the server's CPU per request and peak RSS."""
    out = {}
    for workload, level in runs:
        cpu_before = tree_cpu_seconds(server.process.pid)
        with RssSampler(server.process.pid) as sampler:
            figures = run_level(server, workloads[workload], level, counts)
        served = figures.get("count", 0) + figures.get("warmup", 0)
        server_cpu_s = tree_cpu_seconds(server.process.pid) - cpu_before
        figures["server_cpu_ms_per_request"] = 1e3 * server_cpu_s / max(served, 1)
        peak = max(sampler.peak_bytes, tree_memory_bytes(server.process.pid, "VmHWM"))
        figures["peak_rss_mb"] = peak / MB  # includes VmHWM: the process's peak so far
        figures["rss_mb_during"] = sampler.peak_bytes / MB  # sampled during this level only
        out[f"{workload} c{level}"] = figures
        print(f"    {server.name} {workload} c{level}: {_brief(figures)}", flush=True)
    return out


def best_of(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per measurement, the round with the highest throughput (the least disturbed by other
    load on the machine), with every round's throughput and p50 kept: the targets compare
    measurements round by round (report.Paired)."""
    best = {}
    for key in rounds[0]:
        candidates = [r[key] for r in rounds]
        chosen = dict(max(candidates, key=lambda f: float(f.get("throughput", 0.0))))
        # Unrounded: the targets are ratios of these (report.Paired).
        chosen["rounds_throughput"] = [float(f.get("throughput", 0.0)) for f in candidates]
        chosen["rounds_p50_ms"] = [float(f.get("p50_ms", 0.0)) for f in candidates]
        best[key] = chosen
    return best


def _brief(level: dict[str, Any]) -> str:
    text = f"{level.get('throughput', 0):.1f} img/s"
    if level.get("count"):
        text += f", p50 {level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms"
        # CPU per request: where the two cores went.
        text += f"; CPU/request: client {level['cpu_ms_per_item']:.1f} ms"
        if "server_cpu_ms_per_request" in level:
            text += f", server {level['server_cpu_ms_per_request']:.1f} ms"
    if level.get("errors"):
        text += f", {level['errors']} errors ({level.get('first_error')})"
    return text


def run_variant(
    variant: str,
    weights: str,
    args: argparse.Namespace,
    workloads: dict[str, list[Photo]],
    log_dir: Path,
) -> VariantResult:
    """Both servers stay up (idle ones cost no CPU: onnxruntime's threads do not spin) while
    the in-process, service and torch measurements take turns, `counts.rounds` times."""
    counts = QUICK if args.quick else FULL
    levels = tuple(args.levels)
    model = ensure_model(variant, weights, args.models_dir)
    print(f"== {variant} ({weights} weights): {model}", flush=True)
    port = free_port()
    env = service_env(variant, model, port, dict(args.service_env))
    session, settings = inprocess.open_session(env)
    ip = InProcess(session, settings)
    spec, max_px = session.metadata.preprocessing, settings.max_image_pixels
    decode = inprocess.decode_preprocess_ms(
        workloads["web"] + workloads["phone"], spec, max_px, counts.decode_repeats
    )
    servers: list[Server] = []
    try:
        # Start-up is timed with nothing else of ours running.
        servers.append(start_server("service", python_argv("-m", "service"), port, env,
                                    log_dir / f"service-{port}.log"))  # fmt: skip
        if not args.skip_torch:
            torch_port = free_port()
            argv = python_argv("-m", "benchmarks.baseline_torch_app", "--model", str(model))
            argv += ["--port", str(torch_port)]
            servers.append(start_server("torch-eager", argv, torch_port, {},
                                        log_dir / f"torch-{torch_port}.log"))  # fmt: skip
        inproc_rounds: list[dict[str, dict[str, Any]]] = []
        server_rounds: dict[str, list[dict[str, dict[str, Any]]]] = {s.name: [] for s in servers}
        for r in range(counts.rounds):
            print(f"  round {r + 1}/{counts.rounds}", flush=True)
            inproc_rounds.append({})
            for server in servers:
                server_rounds[server.name].append({})
            for which, runs in round_steps(levels):
                figures = run_inprocess(ip, workloads["web"], workloads["phone"], counts, which)
                inproc_rounds[-1].update(figures)
                summary = {k: round(v["throughput"], 1) for k, v in figures.items()}
                print(f"    in-process: {summary} img/s", flush=True)
                for server in servers:
                    server_rounds[server.name][-1].update(
                        load_server(server, workloads, counts, runs)
                    )
    finally:
        for server in servers:
            server.stop()
    resolved = ip.resolved
    del ip, session  # free the in-process session before the next variant
    result = VariantResult(variant, weights, best_of(inproc_rounds), decode, settings=resolved)
    for server in servers:
        best = best_of(server_rounds[server.name])
        summary = ServerResult(
            server.name,
            server.ready_s,
            max(f["peak_rss_mb"] for r in server_rounds[server.name] for f in r.values()),
            levels={level: best[f"web c{level}"] for level in levels},
            phone={level: best[f"phone c{level}"] for level in PHONE_LEVELS},
        )
        if server.name == "service":
            result.service = summary
        else:
            result.torch = summary
    return result


def top1_agreement(result: VariantResult) -> str:
    if not (result.service and result.torch):
        return ""
    svc = {k: v for lvl in result.service.levels.values() for k, v in lvl.get("top1", {}).items()}
    ref = {k: v for lvl in result.torch.levels.values() for k, v in lvl.get("top1", {}).items()}
    shared = sorted(set(svc) & set(ref))
    same = sum(svc[k] == ref[k] for k in shared)
    detail = ", ".join(f"{k}: {svc[k]}" for k in shared)
    return f"- top-1 service vs torch eager: {same}/{len(shared)} photos agree ({detail})"


def _speed_lines(cond: dict[str, str]) -> list[str]:
    if "python_piece_us" not in cond:
        return []
    return [
        f"The machine's speed during the run (benchmarks/speed_probe.py): a fixed piece of Python "
        f"took {cond['python_piece_us']} µs of CPU (p10 / median / p90 of "
        f"{cond['python_piece_samples']} samples, one every {speed_probe.INTERVAL_S:g} s), at "
        f"least {speed_probe.SLOW:g}× the p10 in {cond['python_piece_slow_share']} of them; a "
        "wide spread means rounds a minute apart ran on a differently fast machine.",
        "",
    ]


def render(
    results: list[VariantResult],
    targets_md: str,
    cond: dict[str, str],
    command: str,
    wall_s: float,
    rounds: int,
) -> str:
    lines = [
        f"### Benchmark run {cond['date']}",
        "",
        f"Command: `{command}` ({wall_s / 60:.1f} min)",
        "",
        f"Machine: {cond['cpu']}, {cond['cores']} cores; load average at start "
        f"{cond['load_average_at_start']}, at end {load_average()}; git {cond['git']}; "
        f"Python {cond['python']}, onnxruntime {cond['onnxruntime']}, torch {cond['torch']}, "
        f"Pillow {cond['pillow']}.",
        "",
        *_speed_lines(cond),
        f"Each figure in the tables is the best of {rounds} interleaved round(s) (both servers "
        "up, idle when not measured); every round's throughput is in the JSON. Each target "
        "compares its two sides round by round and takes the median of the rounds' ratios "
        "(or differences), shown with each round's in parentheses.",
        "",
        "Photos: scikit-image's chelsea, coffee and astronaut as quality-90 JPEGs. The web "
        "workload (every concurrency level) cycles through them at 640x480, the phone workload "
        "(concurrency 16 and 64) at 4032x3024.",
        "",
    ]
    for result in results:
        lines += [figures_table(result), top1_agreement(result), ""]
    lines += ["#### Targets", "", targets_md, ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="EfficientNet service benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--variants", default="b0,lite0", help="comma-separated")
    parser.add_argument("--levels", type=int, nargs="+", default=list(CONCURRENCY_LEVELS))
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/bench-models"))
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--skip-torch", action="store_true", help="no PyTorch-eager baseline")
    parser.add_argument(
        "--service-env", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
        help="extra EFFICIENTNET_* settings for the service and the in-process pipeline",
    )  # fmt: skip
    parser.add_argument(
        "--fail-on-target", action="store_true", help="exit 1 when any target fails"
    )
    return parser.parse_args(argv)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("EFFICIENTNET_"):
        raise argparse.ArgumentTypeError(f"expected EFFICIENTNET_NAME=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    cond = conditions()
    start = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = args.out_dir / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[VariantResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, speed_probe.SpeedProbe() as probe:
        photos = make_photo_set(Path(tmp) / "photos")
        workloads = {
            "web": [p for p in photos if p.size == WEB_SIZE],
            "phone": [p for p in photos if p.size == PHONE_SIZE],
        }
        for variant in args.variants.split(","):
            weights = DEFAULT_WEIGHTS.get(variant, "random")
            results.append(run_variant(variant, weights, args, workloads, log_dir))
    cond.update(probe.summary())
    targets = [t for r in results for t in evaluate(r, strict_resources=r.variant == "b0")]
    rounds = (QUICK if args.quick else FULL).rounds
    wall_s = time.perf_counter() - start
    md = render(results, targets_table(targets), cond, command.strip(), wall_s, rounds)
    md_path = args.out_dir / f"bench-{stamp}.md"
    md_path.write_text(md + "\n")
    payload = {
        "conditions": cond,
        "command": command.strip(),
        "results": [asdict(r) for r in results],
        "targets": [{**asdict(t), "passed": t.passed} for t in targets],
        "speed_probe_us": probe.samples_us,
    }
    md_path.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    print(md)
    print(f"written: {md_path} and {md_path.with_suffix('.json')}")
    failed = [t for t in targets if not t.passed]
    return 1 if failed and args.fail_on_target else 0
