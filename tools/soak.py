"""Soak test: a real server under mixed valid and invalid uploads for minutes.

Starts ``python -m service`` on the ImageNet Lite0 graph, then ``--concurrency`` clients send a
seeded mix of real photos (whose top-1 must be in the photo's known ImageNet classes) and bad
uploads (each with the exact 4xx it must get) for ``--duration`` seconds, while the server's
RSS is sampled from /proc. Passes only with zero 5xx, zero wrong answers, zero transport
errors, and RSS growth after warm-up under ``--max-growth``.

    python tools/soak.py --model models/efficientnet_lite0.onnx --duration 300   # make soak
    python tools/soak.py --model ... --duration 20 --json out.json                # the CI version
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# The one list of real photos and the ImageNet classes a human accepts for each.
from photos import PHOTOS  # noqa: E402

STARTUP_TIMEOUT_S = 120
SAMPLE_EVERY_S = 1.0


@dataclass(frozen=True)
class Case:
    """One kind of request and what a correct answer is."""

    name: str
    body: bytes
    content_type: str
    status: int  # the one right status
    expected: frozenset[int] = frozenset()  # acceptable top-1 for a valid photo
    query: str = ""
    multipart: bool = False


@dataclass
class Tally:
    requests: int = 0
    by_case: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    wrong: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def build_cases() -> list[Case]:
    """Valid photos in lossless and near-lossless encodings, and one case per error."""
    cases = []
    for name, (load, expected) in PHOTOS.items():
        img = Image.fromarray(load())
        for fmt, params, ctype in (
            ("JPEG", {"quality": 95}, "image/jpeg"),
            ("PNG", {}, "image/png"),
            ("WEBP", {"lossless": True}, "image/webp"),
        ):
            body = _encode(img, fmt, **params)
            cases.append(Case(f"{name}.{fmt.lower()}", body, ctype, 200, expected))
        jpeg = cases[-3].body
        cases.append(Case(f"{name}.multipart", jpeg, "image/jpeg", 200, expected, multipart=True))
        cases.append(Case(f"{name}.top1", jpeg, "image/jpeg", 200, expected, query="?top_k=1"))
    jpeg = cases[0].body
    sof = jpeg.find(b"\xff\xc0")
    bomb = jpeg[: sof + 5] + struct.pack(">HH", 65000, 65000) + jpeg[sof + 9 :]
    rng = random.Random(0)
    cases += [
        Case("bad.random_bytes", rng.randbytes(2048), "application/octet-stream", 415),
        Case("bad.truncated_jpeg", jpeg[: len(jpeg) // 3], "image/jpeg", 400),
        Case("bad.png_signature_garbage", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png", 400),
        Case("bad.empty", b"", "image/jpeg", 400),
        Case("bad.jpeg_bomb_header", bomb, "image/jpeg", 413),
        Case("bad.top_k", jpeg, "image/jpeg", 422, query="?top_k=0"),
        Case("bad.content_type", jpeg, "text/plain", 415),
    ]
    return cases


def _check(case: Case, response: httpx.Response) -> str | None:
    """None when the answer is right, else what is wrong with it."""
    if response.status_code != case.status:
        return f"{case.name}: status {response.status_code}, expected {case.status}"
    body = response.json()
    if case.status != 200:
        return None if set(body) == {"error"} else f"{case.name}: not the error shape: {body}"
    top1 = body["predictions"][0]["index"]
    if top1 not in case.expected:
        return f"{case.name}: top-1 {top1} not in {sorted(case.expected)}"
    return None


def client_loop(url: str, cases: list[Case], seed: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < deadline:
            case = rng.choice(cases)
            started = time.monotonic()
            try:
                if case.multipart:
                    files = {"file": ("upload", case.body, case.content_type)}
                    response = client.post(f"/classify{case.query}", files=files)
                else:
                    headers = {"content-type": case.content_type}
                    response = client.post(
                        f"/classify{case.query}", content=case.body, headers=headers
                    )
                problem = _check(case, response)
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.transport_errors.append(f"{case.name}: {exc!r}")
                continue
            with tally.lock:
                tally.requests += 1
                tally.by_case[case.name] += 1
                tally.by_status[response.status_code] += 1
                tally.latencies.append(time.monotonic() - started)
                tally.server_errors += response.status_code >= 500
                if problem:
                    tally.wrong.append(problem)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while not stop.wait(SAMPLE_EVERY_S):
        samples.append((time.monotonic() - started, rss_kb(pid)))


def start_server(model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EFFICIENTNET_")}
    env.update(
        EFFICIENTNET_VARIANT=model.stem.removeprefix("efficientnet_"),
        EFFICIENTNET_MODEL_PATH=str(model),
        EFFICIENTNET_DEVICE=os.environ.get("EFFICIENTNET_DEVICE", "cpu"),
        OMP_NUM_THREADS="2",
    )
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server not ready within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


def _window_median(samples: list[tuple[float, int]], start: float, end: float) -> int:
    values = [rss for t, rss in samples if start <= t <= end]
    if not values:
        raise SystemExit(f"no RSS samples between {start:.0f} s and {end:.0f} s: run longer")
    return int(statistics.median(values))


def _trend(samples: list[tuple[float, int]], every_s: float) -> list[tuple[int, float]]:
    """A few (second, MiB) points: enough to tell a plateau from a slope at a glance."""
    points, next_at = [], 0.0
    for t, rss in samples:
        if t >= next_at:
            points.append((round(t), round(rss / 1024, 1)))
            next_at = t + every_s
    return points


@dataclass
class Report:
    duration_s: float
    warmup_s: float
    concurrency: int
    requests: int
    requests_per_s: float
    by_status: dict[str, int]
    server_errors: int
    wrong_answers: int
    transport_errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    rss_start_mib: float
    rss_after_warmup_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    rss_growth_pct: float
    rss_trend_mib: list[tuple[int, float]]  # (second, RSS) about every tenth of the run
    cases: int
    server_alive: bool
    passed: bool
    failures: list[str]


def run(args: argparse.Namespace) -> Report:
    cases = build_cases()
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    process, url = start_server(Path(args.model), log)
    samples: list[tuple[float, int]] = [(0.0, rss_kb(process.pid))]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(process.pid, stop, samples), daemon=True)
    tally = Tally()
    try:
        sampler.start()
        deadline = time.monotonic() + args.duration
        workers = [
            threading.Thread(target=client_loop, args=(url, cases, seed, deadline, tally))
            for seed in range(args.concurrency)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stop.set()
        sampler.join()
        alive = process.poll() is None and httpx.get(f"{url}/healthz").status_code == 200
    finally:
        stop.set()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    return _report(args, tally, samples, alive, len(cases))


def _report(
    args: argparse.Namespace,
    tally: Tally,
    samples: list[tuple[float, int]],
    alive: bool,
    n_cases: int,
) -> Report:
    window = min(3.0, args.warmup)  # seconds of samples a median is taken over
    after_warmup = _window_median(samples, args.warmup - window, args.warmup)
    end = _window_median(samples, args.duration - window, args.duration + 1)
    growth = 100.0 * (end - after_warmup) / after_warmup
    latencies = sorted(tally.latencies) or [0.0]
    failures = []
    if tally.server_errors:
        failures.append(f"{tally.server_errors} responses with a 5xx status")
    if tally.wrong:
        failures.append(f"{len(tally.wrong)} wrong answers, e.g. {tally.wrong[:3]}")
    if tally.transport_errors:
        failures.append(
            f"{len(tally.transport_errors)} transport errors, e.g. {tally.transport_errors[:3]}"
        )
    if growth >= args.max_growth:
        failures.append(f"RSS grew {growth:.1f}% after warm-up (limit {args.max_growth}%)")
    if not alive:
        failures.append("the server was not alive and healthy at the end")
    if tally.requests == 0:
        failures.append("no requests completed")
    mib = 1024.0
    return Report(
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        requests=tally.requests,
        requests_per_s=round(tally.requests / args.duration, 1),
        by_status={str(k): v for k, v in sorted(tally.by_status.items())},
        server_errors=tally.server_errors,
        wrong_answers=len(tally.wrong),
        transport_errors=len(tally.transport_errors),
        latency_p50_ms=round(1000 * latencies[len(latencies) // 2], 1),
        latency_p99_ms=round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        rss_start_mib=round(samples[0][1] / mib, 1),
        rss_after_warmup_mib=round(after_warmup / mib, 1),
        rss_end_mib=round(end / mib, 1),
        rss_peak_mib=round(max(rss for _, rss in samples) / mib, 1),
        rss_growth_pct=round(growth, 2),
        rss_trend_mib=_trend(samples, args.duration / 10),
        cases=n_cases,
        server_alive=alive,
        passed=not failures,
        failures=failures,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default=str(ROOT / "models" / "efficientnet_lite0.onnx"),
        help="an ImageNet graph (the photos' classes are checked)",
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the RSS baseline (default: a fifth, at most 30)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="clients (default 8)")
    parser.add_argument(
        "--max-growth",
        type=float,
        default=10.0,
        help="allowed RSS growth after warm-up, percent (default 10)",
    )
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument(
        "--log", default=str(ROOT / "artifacts" / "soak-server.log"), help="the server's output"
    )
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(30.0, args.duration / 5)
    if not 0 < args.warmup < args.duration:
        parser.error("--warmup must be between 0 and --duration")
    if not Path(args.model).is_file():
        parser.error(f"model not found: {args.model} (make export VARIANT=lite0)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print("PASS" if report.passed else "FAIL: " + "; ".join(report.failures), file=sys.stderr)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
