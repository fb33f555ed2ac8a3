"""The upload memory bounds the bodies a server holds, against the real server: 32 phone photos
sent at once to a server whose upload memory takes two of them are all answered, correctly,
while its peak RSS grows by a fraction of what the same burst costs a server that holds them
all (the control: the probe does see bodies held)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from live_server import Server, model_env, running_server
from reliability_helpers import RawResponse, raw_request

from benchmarks.photos import PHONE_SIZE, make_photo

BURST = 32
MiB = 1024 * 1024


async def _burst(url: str, body: bytes) -> list[RawResponse]:
    jpeg = {"Content-Type": "image/jpeg"}
    return await asyncio.gather(
        *(raw_request(url, "POST", "/classify", body, jpeg) for _ in range(BURST))
    )


def _upload_memory_in_use(server: Server) -> float:
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    line = next(x for x in metrics.splitlines() if x.startswith("efficientnet_upload_memory_bytes"))
    return float(line.split()[-1])


def burst_growth_mib(server: Server, body: bytes, expected: frozenset[int]) -> float:
    """Peak RSS growth (server and workers) over a burst of BURST uploads of ``body``, all of
    which must be answered with the right class."""
    for _ in range(3):  # the arena, the decode threads and the workers warmed first
        assert httpx.post(f"{server.url}/classify", content=body, timeout=30).status_code == 200
    server.reset_peak()
    before = server.rss_kb()
    outcomes = asyncio.run(_burst(server.url, body))
    growth = (server.hwm_kb() - before) / 1024
    assert [o.status for o in outcomes] == [200] * BURST, {o.status for o in outcomes}
    for o in outcomes:
        assert httpx.Response(200, content=o.body).json()["predictions"][0]["index"] in expected
    assert _upload_memory_in_use(server) == 0  # every body's bytes given back
    server.assert_alive()
    return growth


def test_the_upload_memory_bounds_the_bodies_held(
    lite0_onnx: Path, photos: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = "chelsea"  # the benchmarks' phone photo: 4032x3024 with sensor-like noise
    body = make_photo(name, PHONE_SIZE, tmp_path_factory.mktemp("phone")).data
    held_mib = BURST * len(body) / MiB
    budget_mib = 2 * len(body) // MiB + 1  # two bodies at a time
    growth: dict[int, float] = {}
    for upload_memory in (budget_mib, 4 * int(held_mib)):
        env = model_env(
            lite0_onnx,
            EFFICIENTNET_MAX_UPLOAD_BYTES=str(len(body)),
            EFFICIENTNET_UPLOAD_MEMORY_MB=str(upload_memory),
        )
        log = tmp_path_factory.mktemp("upload-memory") / "server.log"
        with running_server(env, log) as server:
            growth[upload_memory] = burst_growth_mib(server, body, photos[name].expected)
    bounded, unbounded = growth.values()
    print(
        f"{BURST} uploads of {len(body) / MiB:.1f} MiB ({held_mib:.0f} MiB of bodies): peak RSS "
        f"+{bounded:.0f} MiB with {budget_mib} MiB of upload memory, +{unbounded:.0f} MiB with "
        f"{4 * int(held_mib)} MiB"
    )
    assert unbounded > 0.6 * held_mib, "the control does not show the bodies held"
    assert bounded < 0.4 * held_mib
    assert unbounded - bounded > 0.4 * held_mib
