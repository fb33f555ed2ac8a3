"""Dynamic batching: concurrent requests share one ``session.run`` in a worker thread.

A collector task on the event loop waits for a free worker, takes the first queued image, then
whatever else is queued (waiting at most ``max_delay`` for more) up to ``max_batch_size``, and
hands the batch to that worker. While batches run, new requests queue up and form the next one,
so batches grow with load on their own and a lone request never waits for company when the
delay is 0. ``workers`` batches may run at once on the same onnxruntime session (its ``run`` is
thread-safe): on a small CPU a second run fills the gaps a batch-1 run leaves between its many
small operators (BENCHMARKS.md, "Two runs in flight"); on a GPU one is typical.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    future: asyncio.Future[np.ndarray]
    timing: BatchTiming
    enqueued: float = field(default_factory=time.perf_counter)
    trace: Context | None = None  # the submitter's, when traced: its spans are recorded later


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

    async def _run_batch(self, batch: list[_Item]) -> None:
        assert self._queue is not None and self._idle is not None and self._slots is not None
        try:
            if batch:
                await self._dispatch(batch)
        finally:
            self._busy -= 1
            self._slots.release()
            if self._busy == 0 and self._queue.empty():
                self._idle.set()

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
        try:
            logits = await asyncio.get_running_loop().run_in_executor(
                self._worker, self._run, images
            )
        except Exception as exc:  # the model failing is a server error for every rider
            error = InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}")
            _trace(batch, started, time.perf_counter(), error.message)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finished = time.perf_counter()
        _trace(batch, started, finished)
        elapsed = finished - started
        if self._metrics is not None:
            self._metrics.observe_batch(len(batch), elapsed)
        for row, item in enumerate(batch):
            item.timing.queue_wait = started - item.enqueued
            item.timing.inference = elapsed
            item.timing.batch_size = len(batch)
            if self._metrics is not None:
                self._metrics.queue_wait.observe(item.timing.queue_wait)
            if not item.future.done():
                item.future.set_result(logits[row])

    def _observe_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self.depth)


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
