"""The batcher with several runs in flight on one real onnxruntime session: runs overlap up to
``workers`` and never beyond, every request gets its own image's logits, cancelled requests are
skipped, stop() drains what is queued, a batch waits for company only within its delay, the
inference threads go on while the event loop is busy, and a failing run fails its riders only."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from service_helpers import settings_for

from service.errors import InferenceFailed
from service.pipeline.batcher import Batcher
from service.pipeline.session import ModelSession


class CountingRun:
    """The real session's run, recording how many calls were inside it at once."""

    def __init__(self, session: ModelSession) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._inside = 0
        self.most_at_once = 0
        self.batch_sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self._inside += 1
            self.most_at_once = max(self.most_at_once, self._inside)
            self.batch_sizes.append(len(batch))
        try:
            time.sleep(0.02)  # widen the window in which a second run could start
            return self._session.run(batch)
        finally:
            with self._lock:
                self._inside -= 1


@pytest.fixture(scope="module")
def session(lite0_onnx: Path) -> ModelSession:
    return ModelSession.load(settings_for(lite0_onnx, intra_op_threads=1))


def images(session: ModelSession, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    size = session.crop_size
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("workers", [1, 2])
async def test_runs_in_flight_bounded_by_workers(session: ModelSession, workers: int) -> None:
    run = CountingRun(session)
    batcher = Batcher(run, max_batch_size=2, max_delay_ms=0, max_queue=64, workers=workers)
    batcher.start()
    inputs = images(session, 12)
    try:
        results = await asyncio.gather(*(batcher.submit(image) for image in inputs))
    finally:
        await batcher.stop()
    assert run.most_at_once == workers
    assert max(run.batch_sizes) <= 2 and sum(run.batch_sizes) == len(inputs)
    for image, logits in zip(inputs, results, strict=True):  # each its own row, any batching
        np.testing.assert_allclose(logits, session.run(image[None])[0], rtol=1e-4, atol=1e-4)


async def test_cancelled_skipped_and_stop_drains(session: ModelSession) -> None:
    run = CountingRun(session)
    batcher = Batcher(run, max_batch_size=2, max_delay_ms=0, max_queue=64, workers=2)
    batcher.start()
    inputs = images(session, 8)
    tasks = [asyncio.create_task(batcher.submit(image)) for image in inputs]
    await asyncio.sleep(0)  # every submit is queued
    tasks[-1].cancel()
    await batcher.stop()  # drains the queue: every request but the cancelled one answered
    done = [t.result() for t in tasks[:-1]]
    assert len(done) == 7 and all(row.shape == (1000,) for row in done)
    assert tasks[-1].cancelled() and sum(run.batch_sizes) == 7
    with pytest.raises(Exception, match="not running"):
        await batcher.submit(inputs[0])


def test_workers_must_be_positive(session: ModelSession) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Batcher(session.run, max_batch_size=1, max_delay_ms=0, max_queue=1, workers=0)


async def test_threads_take_the_next_batch_while_the_loop_is_busy(session: ModelSession) -> None:
    """Queued images are run while the event loop is blocked: a run that ends takes the next
    batch itself, not through the loop."""
    run = CountingRun(session)
    batcher = Batcher(run, max_batch_size=2, max_delay_ms=0, max_queue=64, workers=2)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(image)) for image in images(session, 8)]
    await asyncio.sleep(0)  # every submit is queued
    deadline = time.monotonic() + 10
    while sum(run.batch_sizes) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)  # the loop stays blocked: no task or callback of it runs
    ran_while_blocked = sum(run.batch_sizes)
    await asyncio.gather(*tasks)
    await batcher.stop()
    assert ran_while_blocked == 8, f"{ran_while_blocked} of 8 images ran while the loop was busy"


@pytest.mark.parametrize(("delay_ms", "batches"), [(0, [1, 1]), (2000, [2])])
async def test_a_batch_waits_for_company_within_its_delay(
    session: ModelSession, delay_ms: float, batches: list[int]
) -> None:
    run = CountingRun(session)
    batcher = Batcher(run, max_batch_size=2, max_delay_ms=delay_ms, max_queue=64, workers=1)
    batcher.start()
    inputs = images(session, 2)
    first = asyncio.create_task(batcher.submit(inputs[0]))
    await asyncio.sleep(0.2)  # a delay of 0 has run the first alone by now
    second = asyncio.create_task(batcher.submit(inputs[1]))
    started = time.monotonic()
    await asyncio.gather(first, second)
    await batcher.stop()
    assert run.batch_sizes == batches
    assert time.monotonic() - started < 2.0  # a full batch does not wait out the delay


async def test_a_failing_run_fails_its_riders_and_the_next_batch_runs(
    session: ModelSession,
) -> None:
    failures = [RuntimeError("out of memory")]

    def run(batch: np.ndarray) -> np.ndarray:
        if failures:
            raise failures.pop()
        return session.run(batch)

    batcher = Batcher(run, max_batch_size=2, max_delay_ms=0, max_queue=64, workers=1)
    batcher.start()
    image = images(session, 1)[0]
    try:
        with pytest.raises(InferenceFailed, match="RuntimeError: out of memory"):
            await batcher.submit(image)
        assert (await batcher.submit(image)).shape == (1000,)
    finally:
        await batcher.stop()
