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
import contextlib
import itertools
import json
import struct
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from benchmarks.stats import summarize


@dataclass(frozen=True)
class Upload:
    name: str
    body: bytes
    content_type: str
    inference_header_length: int | None = None  # the OIP binary extension's JSON header size


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    first_error: str | None = None
    top1: dict[str, str] = field(default_factory=dict)
    answers: list[list[str]] | None = None  # every 200's labels, best first (--answers)


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


def raw_upload(path: Path) -> Upload:
    """The file itself as the body (TorchServe's `curl -T photo.jpg /predictions/<model>`)."""
    return Upload(path.name, path.read_bytes(), "application/octet-stream")


def oip_upload(path: Path, input_name: str, datatype: str, shape: list[int]) -> Upload:
    """One Open Inference Protocol (KServe v2 / Triton) request with the binary tensor data
    extension, as tritonclient sends it: a JSON header, then the raw tensor bytes. BYTES
    elements are length-prefixed (4-byte little-endian); the `labels` output comes back as
    JSON strings "score:index:label", best first."""
    data = path.read_bytes()
    raw = struct.pack("<I", len(data)) + data if datatype == "BYTES" else data
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "labels", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return Upload(path.name, header + raw, "application/octet-stream", len(header))


# How each server's request is built: `--format` picks one (the peers speak their own APIs).
FORMATS = ("multipart", "raw", "oip-bytes", "oip-uint8")


def make_upload(path: Path, fmt: str, field_name: str, tensor_shape: list[int]) -> Upload:
    if fmt == "multipart":
        return multipart_upload(path, field_name)
    if fmt == "raw":
        return raw_upload(path)
    if fmt == "oip-bytes":
        return oip_upload(path, "encoded_image", "BYTES", [1, 1])
    if fmt == "oip-uint8":
        return oip_upload(path, "image", "UINT8", [1, *tensor_shape])
    raise ValueError(f"unknown request format {fmt!r} (one of {', '.join(FORMATS)})")


def _labels(body: bytes) -> list[str]:
    """Every label of one of our answers, best first: ours ({"predictions": [...]}) or the Open
    Inference Protocol's `labels` output; [] for anything else."""
    try:
        doc = json.loads(body)
        if "predictions" in doc:
            return [str(p["label"]) for p in doc["predictions"]]
        (labels,) = [o for o in doc["outputs"] if o["name"] == "labels"]
        return [str(item).split(":", 2)[2] for item in labels["data"]]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return []


def _top1(body: bytes) -> str | None:
    """The best label, from any of the response shapes the benchmarked servers answer with:
    ours ({"predictions": [{"label": ...}]}, also BentoML's), the Open Inference Protocol's
    `labels` output ("score:index:label" strings) and TorchServe's ({label: score, ...}, best
    first)."""
    try:
        doc = json.loads(body)
        if isinstance(doc, list) and len(doc) == 1:  # BentoML: a batchable API's one-item list
            doc = doc[0]
        if "predictions" in doc:
            return str(doc["predictions"][0]["label"])
        if "outputs" in doc:
            (labels,) = [o for o in doc["outputs"] if o["name"] == "labels"]
            return str(labels["data"][0]).split(":", 2)[2]
        if doc and all(isinstance(v, float) for v in doc.values()):
            return str(next(iter(doc)))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return None


class RawConnection:
    """One keep-alive HTTP/1.1 connection, written by hand: at 64 connections httpx's pool
    costs the client several ms of CPU per request, which on a 2-core machine comes straight
    out of the server's share. This costs a fraction of that. Handles Content-Length and
    chunked responses and reconnects after `Connection: close` or a dropped socket."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the raw client speaks plain http only, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, upload: Upload) -> tuple[int, bytes]:
        extra = ""
        if upload.inference_header_length is not None:
            extra = f"Inference-Header-Content-Length: {upload.inference_header_length}\r\n"
        head = (
            f"POST {self.target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: {upload.content_type}\r\nContent-Length: {len(upload.body)}\r\n"
            f"{extra}\r\n"
        ).encode()
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        try:
            writer.write(head + upload.body)
            await writer.drain()
            status, headers = await self._read_head(reader)
            body = await self._read_body(reader, headers)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        block = await reader.readuntil(b"\r\n\r\n")
        lines = block.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return status, headers

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size + 2))
            await reader.readuntil(b"\r\n")  # the empty trailer
            return b"".join(c[:-2] for c in chunks)
        return await reader.readexactly(int(headers.get("content-length", "0")))

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HttpxConnection:
    """The same interface over one shared httpx client (kept for comparison)."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url

    async def post(self, upload: Upload) -> tuple[int, bytes]:
        headers = {"content-type": upload.content_type}
        if upload.inference_header_length is not None:
            headers["inference-header-content-length"] = str(upload.inference_header_length)
        response = await self.client.post(self.url, content=upload.body, headers=headers)
        return response.status_code, response.content

    async def close(self) -> None:
        return None


Connection = RawConnection | HttpxConnection


async def _worker(
    conn: Connection,
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
            status, body = await conn.post(upload)
        except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.statuses[0] += 1
            tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
            continue
        elapsed = time.perf_counter() - start
        tally.statuses[status] += 1
        if status == 200:
            tally.latencies_s.append(elapsed)
            if upload.name not in tally.top1 and (label := _top1(body)) is not None:
                tally.top1[upload.name] = label
            if tally.answers is not None:
                tally.answers.append(_labels(body))
        elif tally.first_error is None:
            tally.first_error = f"HTTP {status}: {body[:300].decode(errors='replace')}"


async def run_load(
    url: str,
    uploads: list[Upload],
    concurrency: int,
    requests: int,
    max_seconds: float,
    warmup: int = 0,
    client: str = "raw",
    keep_answers: bool = False,
) -> dict[str, object]:
    """Warm-up requests (not counted), then the measured closed loop."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(max(60.0, max_seconds))
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as shared:
        conns: list[Connection] = [
            RawConnection(url) if client == "raw" else HttpxConnection(shared, url)
            for _ in range(concurrency)
        ]
        if warmup:
            await _run_workers(conns, uploads, warmup, 60.0)
        start, cpu_start = time.perf_counter(), time.process_time()
        tally = await _run_workers(conns, uploads, requests, max_seconds, keep_answers)
        duration = time.perf_counter() - start
        # The client shares the machine's cores with the server: say how much it took
        # (reported as cpu_ms_per_item).
        client_cpu_s = time.process_time() - cpu_start
        for conn in conns:
            await conn.close()
    errors = sum(n for status, n in tally.statuses.items() if status != 200)
    result: dict[str, object] = {
        "concurrency": concurrency,
        "client": client,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "first_error": tally.first_error,
        "top1": tally.top1,
        "warmup": warmup,
    }
    if tally.answers is not None:
        result["answers"] = tally.answers
    if tally.latencies_s:
        result.update(summarize(tally.latencies_s, duration, errors, client_cpu_s).as_dict())
    else:
        result.update(count=0, errors=errors, duration_s=duration, throughput=0.0)
    return result


async def _run_workers(
    conns: list[Connection],
    uploads: list[Upload],
    total: int,
    max_seconds: float,
    keep_answers: bool = False,
) -> Tally:
    tally = Tally(answers=[] if keep_answers else None)
    counter = itertools.count()
    deadline = time.perf_counter() + max_seconds
    await asyncio.gather(
        *(_worker(conn, uploads, counter, total, deadline, tally) for conn in conns)
    )
    return tally


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--file", type=Path, action="append", required=True)
    parser.add_argument("--field", default="file", help="multipart field name")
    parser.add_argument("--format", choices=FORMATS, default="multipart", help="request shape")
    parser.add_argument(
        "--tensor-shape", default="224,224,3", help="oip-uint8: one image's H,W,C (file = raw)"
    )
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True, help="measured requests")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=int, default=0, help="uncounted requests first")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument(
        "--answers",
        action="store_true",
        help="also print every answer's labels, best first (which model gave each, in a swap)",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.requests < 1:
        parser.error("--concurrency and --requests must be at least 1")
    return args


def _runner():
    """uvloop when installed (uvicorn[standard] brings it): the cheaper loop for the client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = [int(x) for x in args.tensor_shape.split(",")]
    uploads = [make_upload(path, args.format, args.field, shape) for path in args.file]
    result = asyncio.run(
        run_load(
            args.url, uploads, args.concurrency, args.requests, args.max_seconds, args.warmup,
            keep_answers=args.answers,
        )
    )  # fmt: skip
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["count"] else 1


if __name__ == "__main__":
    sys.exit(main())
