"""Concurrent uploads to ``POST /classify`` with httpx, one Outcome per file."""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .outcome import Outcome, Status

# A busy server answers 503 + Retry-After: wait as told, a few times, but never for long.
MAX_ATTEMPTS = 4
MAX_RETRY_WAIT_S = 5.0


@dataclass(frozen=True)
class Request:
    url: str
    top_k: int | None  # None: the server's default (5, or every class of a smaller model)
    api_key: str | None
    concurrency: int
    timeout_s: float


def _error_fields(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) from the service's ``{"error": {"code", "message"}}``, whatever it sent."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None, response.text[:200] or response.reason_phrase
    if isinstance(error, dict):
        return error.get("code"), str(error.get("message"))
    return None, str(error)


def _classify_status(status_code: int) -> Status:
    if status_code in (401, 403):
        return Status.UNAUTHORIZED
    if 400 <= status_code < 500 and status_code != 408:
        return Status.REJECTED
    return Status.SERVER_ERROR


def _retry_after(response: httpx.Response) -> float | None:
    if response.status_code != 503:
        return None
    try:
        return min(float(response.headers.get("retry-after", "1")), MAX_RETRY_WAIT_S)
    except ValueError:
        return 1.0


async def _post(client: httpx.AsyncClient, path: Path, top_k: int | None) -> httpx.Response:
    data = path.read_bytes()
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    params = {} if top_k is None else {"top_k": top_k}
    for _attempt in range(MAX_ATTEMPTS - 1):
        files = {"file": (path.name, data, mime)}
        response = await client.post("/classify", params=params, files=files)
        wait = _retry_after(response)
        if wait is None:
            return response
        await asyncio.sleep(wait)
    return await client.post("/classify", params=params, files={"file": (path.name, data, mime)})


def _outcome(name: str, response: httpx.Response) -> Outcome:
    if response.status_code == 200:
        try:
            result: Any = response.json()
        except ValueError:
            result = None
        if not isinstance(result, dict) or not isinstance(result.get("predictions"), list):
            return Outcome(name, Status.SERVER_ERROR, http_status=200, message="malformed reply")
        return Outcome(name, Status.OK, result=result, http_status=200)
    code, message = _error_fields(response)
    return Outcome(
        name, _classify_status(response.status_code), None, response.status_code, code, message
    )


async def classify_one(client: httpx.AsyncClient, path: Path, top_k: int | None) -> Outcome:
    name = str(path)
    try:
        response = await _post(client, path, top_k)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return Outcome(name, Status.UNREACHABLE, message=f"cannot connect: {exc}")
    except httpx.TimeoutException:
        return Outcome(name, Status.SERVER_ERROR, message="timed out waiting for the server")
    except httpx.TransportError as exc:
        return Outcome(name, Status.SERVER_ERROR, message=f"{type(exc).__name__}: {exc}")
    return _outcome(name, response)


async def classify_files(
    paths: list[Path], request: Request, on_done: Callable[[Outcome], None]
) -> list[Outcome]:
    """Classify all files, ``request.concurrency`` at a time; results in input order."""
    headers = {"Authorization": f"Bearer {request.api_key}"} if request.api_key else {}
    limits = httpx.Limits(max_connections=request.concurrency)
    semaphore = asyncio.Semaphore(request.concurrency)
    async with httpx.AsyncClient(
        base_url=request.url, headers=headers, timeout=request.timeout_s, limits=limits
    ) as client:

        async def one(path: Path) -> Outcome:
            async with semaphore:
                outcome = await classify_one(client, path, request.top_k)
            on_done(outcome)
            return outcome

        return list(await asyncio.gather(*(one(p) for p in paths)))
