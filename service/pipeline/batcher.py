"""Dynamic batching: concurrent requests share one ``session.run`` in a worker thread.

A collector task on the event loop waits for a free worker, takes the first queued image, then
whatever else is queued (waiting at most ``max_delay`` for more) up to ``max_batch_size``, and
hands the batch to that worker. While batches run, new requests queue up and form the next one,
so batches grow with load on their own and a lone request never waits for company when the
delay is 0. ``workers`` batches may run at once on the same onnxruntime session (its ``run`` is
thread-safe): on a small CPU a second run fills the gaps a batch-1 run leaves between its many
small operators (BENCHMARKS.md, "Two runs in flight"); on a GPU one is typical.

An idle batcher (nothing queued or running, a worker free besides the one the collector waits
with, no delay to wait for company) also lends that worker to a request for its one image
(``lend_idle``): the request runs it as a batch of one in the thread that decoded it, sparing
the trips through the event loop, the queue and the collector (BENCHMARKS.md, "Decode and
inference in one trip").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.context import Context

from service.errors import InferenceFailed, NotReady, QueueFull
from service.metrics import Metrics
from service.pipeline import spans

RunFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class BatchTiming:
    """Filled in by the batcher for one image (seconds)."""

    queue_wait: float = 0.0
    inference: float = 0.0
    batch_size: int = 0


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future[np.ndarray] | None  # None for a lent worker's image (Solo)
    timing: BatchTiming
    enqueued: float = field(default_factory=time.perf_counter)
    trace: Context | None = None  # the submitter's, when traced: its spans are recorded later


class RequestLeft(Exception):
    """In a lent worker's thread: its request ended before the run, so nobody awaits it."""


class Solo:
    """A worker lent by an idle batcher for one image, run in the borrower's own thread.

    ``run`` is called in that thread (a decode thread, right after the decode); ``give_back`` on
    the event loop once the request is done with it. The worker returns to the batcher when both
    have happened: a request that times out mid-run does not free a worker still running.
    """

    def __init__(self, batcher: Batcher, timing: BatchTiming) -> None:
        self._batcher = batcher
        self._loop = asyncio.get_running_loop()
        self._item = _Item(np.empty(0, np.uint8), None, timing, trace=spans.traced_context())
        self._lock = threading.Lock()
        self._running = False
        self._given_back = False
        self.started: float | None = None  # perf_counter() when its run began

    def run(self, image: np.ndarray) -> np.ndarray:
        """In the borrower's thread: ``image``'s logits row, as a batch of one."""
        with self._lock:
            if self._given_back:  # the request left during its decode: nobody wants the answer
                raise RequestLeft("the request ended before its inference")
            self._running = True
        try:
            self.started = time.perf_counter()
            self._item.enqueued = self.started  # no queue: it waited for nothing
            return self._batcher.run_now([self._item], image[None], self.started)[0]
        finally:
            with self._lock:
                self._running = False
                returned = self._given_back
            if returned:
                self._loop.call_soon_threadsafe(self._batcher.end_run)

    def give_back(self) -> None:
        """On the event loop: the request is done with the worker."""
        with self._lock:
            self._given_back = True
            running = self._running
        if not running:  # else its run's end gives the worker back
            self._batcher.end_run()


class Batcher:
    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue: int,
        workers: int = 1,
        metrics: Metrics | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self._metrics = metrics
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None
        self.workers = workers
        self._worker = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
        self._slots: asyncio.Semaphore | None = None  # free workers
        self._busy = 0  # batches being formed or run
        self._running: set[asyncio.Task[None]] = set()  # strong refs to dispatched batches
        self._closing = False

    def start(self) -> None:
        """Start the collector on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots = asyncio.Semaphore(self.workers)
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="batcher")

    async def submit(self, image: np.ndarray, timing: BatchTiming | None = None) -> np.ndarray:
        """One uint8 HWC image → its float32 logits row; QueueFull (503) when the queue is full."""
        if self._queue is None or self._closing:
            raise NotReady("the batcher is not running (starting up or shutting down)")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        item = _Item(image, future, timing or BatchTiming(), trace=spans.traced_context())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise QueueFull(
                f"the inference queue is full ({self.max_queue} waiting); retry shortly"
            ) from None
        self._observe_depth()
        return await future

    async def lend_idle(self, timing: BatchTiming) -> Solo | None:
        """A worker for one image that the caller runs itself (``Solo``), when the batcher is
        idle and would form a batch of one at once anyway; None otherwise (submit instead)."""
        assert self._slots is not None and self._queue is not None
        # Idle, nothing lent: the collector holds at most one worker while it waits for work.
        idle = self._busy == 0 and self._queue.empty()
        if self._closing or not idle or self.workers < 2 or self.max_delay_s > 0:
            return None
        await self._slots.acquire()  # one is free: taken at once, without a wait
        self._begin()
        return Solo(self, timing)

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def stop(self) -> None:
        """Refuse new work, finish everything already queued, then stop the worker."""
        self._closing = True
        if self._queue is not None and self._idle is not None:
            while not self._queue.empty() or not self._idle.is_set():
                await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._worker.shutdown(wait=True)

    async def _collect(self) -> None:
        assert self._queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            # A worker first, then the batch: whatever queues while every worker is busy
            # joins the next batch instead of waiting behind one formed too early.
            await self._slots.acquire()
            try:
                first = await self._queue.get()
            except BaseException:
                self._slots.release()
                raise
            self._begin()
            batch = [first]
            await self._fill(batch, loop.time() + self.max_delay_s)
            self._observe_depth()
            live = [item for item in batch if not item.future.done()]  # skip cancelled requests
            task = loop.create_task(self._run_batch(live), name="batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _begin(self) -> None:
        assert self._idle is not None
        self._busy += 1
        self._idle.clear()

    def end_run(self) -> None:
        """A batch or a lent worker is done: its worker is free again."""
        assert self._queue is not None and self._idle is not None and self._slots is not None
        self._busy -= 1
        self._slots.release()
        if self._busy == 0 and self._queue.empty():
            self._idle.set()

    async def _run_batch(self, batch: list[_Item]) -> None:
        try:
            if batch:
                await self._dispatch(batch)
        finally:
            self.end_run()

    async def _fill(self, batch: list[_Item], deadline: float) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                return

    async def _dispatch(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        # A single image needs no copy: a [1, H, W, 3] view of its own array.
        images = batch[0].image[None] if len(batch) == 1 else np.stack([i.image for i in batch])
        loop = asyncio.get_running_loop()
        try:
            logits = await loop.run_in_executor(self._worker, self.run_now, batch, images, started)
        except Exception as exc:  # the model failing is a server error for every rider
            error = exc if isinstance(exc, InferenceFailed) else _failed(exc)
            for item in batch:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(error)
            return
        for row, item in enumerate(batch):
            if item.future is not None and not item.future.done():
                item.future.set_result(logits[row])

    def run_now(self, batch: list[_Item], images: np.ndarray, started: float) -> np.ndarray:
        """In the calling thread: ``images`` (the riders') through the session, timed, traced
        and counted; InferenceFailed if the model fails."""
        try:
            logits = self._run(images)
        except Exception as exc:
            error = _failed(exc)
            _trace(batch, started, time.perf_counter(), error.message)
            raise error from None
        finished = time.perf_counter()
        _trace(batch, started, finished)
        elapsed = finished - started
        if self._metrics is not None:
            self._metrics.observe_batch(len(batch), elapsed)
        for item in batch:
            item.timing.queue_wait = started - item.enqueued
            item.timing.inference = elapsed
            item.timing.batch_size = len(batch)
            if self._metrics is not None:
                self._metrics.queue_wait.observe(item.timing.queue_wait)
        return logits

    def _observe_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self.depth)


def _failed(exc: Exception) -> InferenceFailed:
    return InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}")


def _trace(batch: list[_Item], started: float, finished: float, error: str | None = None) -> None:
    """Each traced rider's queue-wait and inference spans, under the request that submitted
    it; the batch ran in a worker thread for them all, so they are recorded afterwards."""
    traced = [item for item in batch if item.trace is not None]
    if not traced:
        return
    clock = spans.Clock()
    begun, ended = clock.ns(started), clock.ns(finished)
    attributes = {spans.BATCH_SIZE: len(batch)}
    for item in traced:
        assert item.trace is not None
        spans.record(spans.QUEUE_WAIT, item.trace, clock.ns(item.enqueued), begun, attributes)
        spans.record(spans.INFERENCE, item.trace, begun, ended, attributes, error)
