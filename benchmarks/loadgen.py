"""A closed-loop HTTP load generator: `concurrency` workers, each sending the next upload as
soon as its previous one is answered. Runs in its own process (never the service's code) and
prints one JSON object with throughput and latency percentiles.

    python -m benchmarks.loadgen --url http://127.0.0.1:8000/classify \
        --file a.jpg --file b.jpg --concurrency 16 --requests 200 --max-seconds 30

Request bodies are built once up front so that the client spends as little of the shared
CPU as possible while measuring.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.stats import summarize


@dataclass(frozen=True)
class Upload:
    name: str
    body: bytes
    content_type: str


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    first_error: str | None = None
    top1: dict[str, str] = field(default_factory=dict)


def multipart_upload(path: Path, field_name: str) -> Upload:
    """One multipart/form-data body holding the file, as a browser or `curl -F` sends it."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field_name}"; filename="{path.name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return Upload(path.name, body, f"multipart/form-data; boundary={boundary}")


def _top1(response: httpx.Response) -> str | None:
    try:
        predictions = response.json()["predictions"]
        return str(predictions[0]["label"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


async def _worker(
    client: httpx.AsyncClient,
    url: str,
    uploads: list[Upload],
    counter: itertools.count,
    total: int,
    deadline: float,
    tally: Tally,
) -> None:
    while (i := next(counter)) < total and time.perf_counter() < deadline:
        upload = uploads[i % len(uploads)]
        start = time.perf_counter()
        try:
            response = await client.post(
                url, content=upload.body, headers={"content-type": upload.content_type}
            )
        except httpx.HTTPError as exc:
            tally.statuses[0] += 1
            tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
            continue
        elapsed = time.perf_counter() - start
        tally.statuses[response.status_code] += 1
        if response.status_code == 200:
            tally.latencies_s.append(elapsed)
            if upload.name not in tally.top1 and (label := _top1(response)) is not None:
                tally.top1[upload.name] = label
        elif tally.first_error is None:
            tally.first_error = f"HTTP {response.status_code}: {response.text[:300]}"


async def run_load(
    url: str,
    uploads: list[Upload],
    concurrency: int,
    requests: int,
    max_seconds: float,
    warmup: int = 0,
) -> dict[str, object]:
    """Warm-up requests (not counted), then the measured closed loop."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(max(60.0, max_seconds))
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        if warmup:
            await _run_workers(client, url, uploads, concurrency, warmup, 60.0)
        start, cpu_start = time.perf_counter(), time.process_time()
        tally = await _run_workers(client, url, uploads, concurrency, requests, max_seconds)
        duration = time.perf_counter() - start
        # The client shares the machine's cores with the server: say how much it took
        # (reported as cpu_ms_per_item).
        client_cpu_s = time.process_time() - cpu_start
    errors = sum(n for status, n in tally.statuses.items() if status != 200)
    result: dict[str, object] = {
        "concurrency": concurrency,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "first_error": tally.first_error,
        "top1": tally.top1,
        "warmup": warmup,
    }
    if tally.latencies_s:
        result.update(summarize(tally.latencies_s, duration, errors, client_cpu_s).as_dict())
    else:
        result.update(count=0, errors=errors, duration_s=duration, throughput=0.0)
    return result


async def _run_workers(
    client: httpx.AsyncClient,
    url: str,
    uploads: list[Upload],
    concurrency: int,
    total: int,
    max_seconds: float,
) -> Tally:
    tally = Tally()
    counter = itertools.count()
    deadline = time.perf_counter() + max_seconds
    await asyncio.gather(
        *(
            _worker(client, url, uploads, counter, total, deadline, tally)
            for _ in range(concurrency)
        )
    )
    return tally


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--file", type=Path, action="append", required=True)
    parser.add_argument("--field", default="file", help="multipart field name")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True, help="measured requests")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=int, default=0, help="uncounted requests first")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.requests < 1:
        parser.error("--concurrency and --requests must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uploads = [multipart_upload(path, args.field) for path in args.file]
    result = asyncio.run(
        run_load(args.url, uploads, args.concurrency, args.requests, args.max_seconds, args.warmup)
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["count"] else 1


if __name__ == "__main__":
    sys.exit(main())
