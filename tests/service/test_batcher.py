"""The batcher with several runs in flight on one real onnxruntime session: runs overlap up to
``workers`` and never beyond, every request gets its own image's logits, cancelled requests are
skipped, and stop() drains what is queued."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from service_helpers import settings_for

from service.errors import InferenceFailed
from service.pipeline.batcher import Batcher, BatchTiming, RequestLeft, RunFn
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


# --- A worker lent by an idle batcher (Solo): a batch of one run in the borrower's thread -------


async def _stopped(batcher: Batcher) -> None:
    """stop(), failing rather than hanging when a test left a worker lent."""
    await asyncio.wait_for(batcher.stop(), 10)


def _batcher(run: RunFn, workers: int = 2, delay_ms: float = 0) -> Batcher:
    return Batcher(run, max_batch_size=2, max_delay_ms=delay_ms, max_queue=64, workers=workers)


async def test_an_idle_batcher_lends_a_worker_for_one_image(session: ModelSession) -> None:
    batcher = _batcher(session.run)
    batcher.start()
    image = images(session, 1)[0]
    timing = BatchTiming()
    try:
        solo = await batcher.lend_idle(timing)
        assert solo is not None
        logits = await asyncio.to_thread(solo.run, image)
        solo.give_back()
    finally:
        await _stopped(batcher)
    np.testing.assert_allclose(logits, session.run(image[None])[0], rtol=1e-4, atol=1e-4)
    assert timing.batch_size == 1 and timing.queue_wait == 0 and timing.inference > 0
    assert solo.started is not None


async def test_lent_only_when_idle_with_no_delay_and_a_second_worker(
    session: ModelSession,
) -> None:
    timing = BatchTiming()
    one = _batcher(session.run, workers=1)  # the collector waits with the only worker
    delayed = _batcher(session.run, delay_ms=5)  # a lone image waits for company
    two = _batcher(session.run)
    for batcher in (one, delayed, two):
        batcher.start()
    try:
        assert await one.lend_idle(timing) is None
        assert await delayed.lend_idle(timing) is None
        solo = await two.lend_idle(timing)
        assert solo is not None
        assert await two.lend_idle(timing) is None, "the one free worker is lent"
        solo.give_back()
        again = await two.lend_idle(timing)
        assert again is not None, "given back unused: free again"
        again.give_back()
        queued = asyncio.create_task(two.submit(images(session, 1)[0]))
        await asyncio.sleep(0)  # queued: the batcher is busy
        assert await two.lend_idle(timing) is None
        await queued
    finally:
        for batcher in (one, delayed, two):
            await _stopped(batcher)


async def test_a_lent_worker_counts_among_the_runs_in_flight(session: ModelSession) -> None:
    run = CountingRun(session)
    batcher = _batcher(run)
    batcher.start()
    inputs = images(session, 9)
    try:
        solo = await batcher.lend_idle(BatchTiming())
        assert solo is not None
        lent = asyncio.to_thread(solo.run, inputs[0])
        results = await asyncio.gather(lent, *(batcher.submit(image) for image in inputs[1:]))
        solo.give_back()
    finally:
        await _stopped(batcher)
    assert run.most_at_once <= 2 and sum(run.batch_sizes) == len(inputs)
    for image, logits in zip(inputs, results, strict=True):
        np.testing.assert_allclose(logits, session.run(image[None])[0], rtol=1e-4, atol=1e-4)


class GatedRun:
    """The session's run, held until ``release`` is set."""

    def __init__(self, session: ModelSession) -> None:
        self.session = session
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.release.wait(10)
        return self.session.run(batch)


async def test_a_worker_given_back_mid_run_returns_when_the_run_ends(
    session: ModelSession,
) -> None:
    run = GatedRun(session)
    batcher = _batcher(run)
    batcher.start()
    try:
        solo = await batcher.lend_idle(BatchTiming())
        assert solo is not None
        running = asyncio.create_task(asyncio.to_thread(solo.run, images(session, 1)[0]))
        await asyncio.to_thread(run.entered.wait, 10)
        solo.give_back()  # the request timed out, say: its run goes on
        assert await batcher.lend_idle(BatchTiming()) is None, "still running: not free"
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done(), "stop waits for the lent worker's run"
        run.release.set()
        assert (await running).shape == (1000,)
        await asyncio.wait_for(stopping, 10)
    finally:
        run.release.set()
        await _stopped(batcher)


async def test_a_run_after_the_request_left_is_skipped(session: ModelSession) -> None:
    run = CountingRun(session)
    batcher = _batcher(run)
    batcher.start()
    try:
        solo = await batcher.lend_idle(BatchTiming())
        assert solo is not None
        solo.give_back()  # the request ended during its decode
        with pytest.raises(RequestLeft):
            await asyncio.to_thread(solo.run, images(session, 1)[0])
        assert run.batch_sizes == []
        back = await batcher.lend_idle(BatchTiming())
        assert back is not None, "the worker is back"
        back.give_back()
    finally:
        await _stopped(batcher)


async def test_a_lent_run_that_fails_is_inference_failed(session: ModelSession) -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("device lost")

    batcher = _batcher(broken)
    batcher.start()
    try:
        solo = await batcher.lend_idle(BatchTiming())
        assert solo is not None
        with pytest.raises(InferenceFailed, match="device lost"):
            await asyncio.to_thread(solo.run, images(session, 1)[0])
        solo.give_back()
    finally:
        await _stopped(batcher)
