"""The upload memory: a request reserves its body's bytes before the body is read and holds
them until it is answered; one that does not fit waits, reading nothing, and gets 503 past the
request timeout. The settings keep any upload of the allowed size readable."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from service.config import UPLOAD_MEMORY, MiB, load_settings
from service.errors import QueueFull, StartupError
from service.pipeline.admission import Admission


@dataclass
class Body:
    """A request's body as admission sees it (service/edge/body_limit.py's guard)."""

    declared: int | None
    started: float = 0.0
    received: int = 0

    def data_waiting(self) -> bool | None:
        return True

    def evict(self, message: str) -> None:
        raise AssertionError("not evicted here")


def admission(upload_memory: int = 10 * MiB, max_upload: int = 8 * MiB) -> Admission:
    return Admission(capacity=16, upload_memory=upload_memory, max_upload=max_upload)


async def test_a_body_waits_until_those_held_leave_room() -> None:
    gate = admission()
    events: list[tuple[str, str, int]] = []

    async def request(name: str, size: int, hold_s: float) -> None:
        async with gate.holding_body(Body(size), timeout_s=5):
            events.append((name, "holds", gate.uploads.in_use()))
            await asyncio.sleep(hold_s)
        events.append((name, "done", gate.uploads.in_use()))

    small = asyncio.create_task(request("small", 1 * MiB, 0.3))
    await asyncio.sleep(0)
    await asyncio.gather(request("first", 6 * MiB, 0.2), request("second", 6 * MiB, 0.0), small)
    # 6 + 6 MiB is over 10: the second is read only once the first is answered, its bytes
    # handed over as the first gives them back; the 1 MiB one fits beside either.
    assert events == [
        ("small", "holds", 1 * MiB),
        ("first", "holds", 7 * MiB),
        ("first", "done", 7 * MiB),
        ("second", "holds", 7 * MiB),
        ("second", "done", 1 * MiB),
        ("small", "done", 0),
    ]


async def test_a_body_without_a_length_reserves_the_upload_limit() -> None:
    gate = admission()
    async with gate.holding_body(Body(None), timeout_s=1):
        assert gate.uploads.in_use() == 8 * MiB
    async with gate.holding_body(None, timeout_s=1):  # no edge guard: the same bound
        assert gate.uploads.in_use() == 8 * MiB
    assert gate.uploads.in_use() == 0


async def test_a_body_that_never_fits_in_time_gets_503_and_leaks_nothing() -> None:
    gate = admission()
    async with gate.holding_body(Body(6 * MiB), timeout_s=1):
        with pytest.raises(QueueFull) as refused:
            async with gate.holding_body(Body(6 * MiB), timeout_s=0.1):
                raise AssertionError("admitted past the upload memory")
        assert gate.uploads.in_use() == 6 * MiB
    assert refused.value.status_code == 503
    assert "EFFICIENTNET_UPLOAD_MEMORY_MB" in refused.value.message
    assert "6 MiB of the 10 MiB" in refused.value.message
    assert gate.uploads.in_use() == 0
    async with gate.holding_body(Body(10 * MiB), timeout_s=0.1):  # all of it is free again
        pass


async def test_a_failed_request_gives_its_bytes_back() -> None:
    gate = admission()
    with pytest.raises(ValueError, match="bad body"):
        async with gate.holding_body(Body(3 * MiB), timeout_s=1):
            raise ValueError("bad body")
    assert gate.uploads.in_use() == 0


def test_the_default_holds_the_largest_upload() -> None:
    assert load_settings().upload_memory_bytes == UPLOAD_MEMORY
    big = load_settings(max_upload_bytes=100 * MiB)
    assert big.upload_memory_bytes == 100 * MiB
    assert load_settings(upload_memory_mb=512).upload_memory_bytes == 512 * MiB


def test_an_upload_memory_under_the_upload_limit_stops_the_start() -> None:
    with pytest.raises(StartupError) as stopped:
        load_settings(upload_memory_mb=4, max_upload_bytes=20 * MiB)
    message = str(stopped.value)
    assert "EFFICIENTNET_UPLOAD_MEMORY_MB=4" in message
    assert "EFFICIENTNET_MAX_UPLOAD_BYTES=20971520" in message
