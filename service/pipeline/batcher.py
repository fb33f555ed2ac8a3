"""Dynamic batching: concurrent requests share one ``session.run`` in an inference thread.

``workers`` inference threads take their batches from one queue themselves: a free thread waits
for the first queued image, then takes whatever else is queued (waiting at most ``max_delay``
for more) up to ``max_batch_size``, runs it, hands its rows to the event loop and goes back to
the queue. While batches run, new requests queue up and form the next one, so batches grow with
load on their own and a lone request never waits for company when the delay is 0. One thread
forms a batch at a time, so a batch is never split between two idle threads.

The event loop only queues an image and, once per batch, receives the results: a thread whose
run ends starts its next batch without waiting for the loop, which at c64 is busy with HTTP for
a tenth of the time (BENCHMARKS.md, "Inference threads take their own batches").

``workers`` batches may run at once on the same onnxruntime session (its ``run`` is thread-safe):
on a small CPU a second run fills the gaps a batch-1 run leaves between its many small operators
(BENCHMARKS.md, "Two runs in flight"); on a GPU one is typical.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.context import Context

from service.errors import InferenceFailed, NotReady, QueueFull, ServiceError
from service.metrics import Metrics
from service.pipeline import spans

RunFn = Callable[[np.ndarray], np.ndarray]

# How often stop() looks whether the queue has drained.
_DRAIN_POLL_S = 0.005


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
        self.workers = workers
        self._metrics = metrics
        self._queue: collections.deque[_Item] = collections.deque()
        self._lock = threading.Lock()  # the queue, ``_taken`` and ``_stopping``
        self._queued = threading.Condition(self._lock)  # an image was queued, or stop
        self._forming = threading.Lock()  # one thread forms a batch at a time
        self._taken = 0  # batches taken from the queue whose results the loop has not had
        self._stopping = False
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the inference threads; results go to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._serve, name=f"inference_{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(self, image: np.ndarray, timing: BatchTiming | None = None) -> np.ndarray:
        """One uint8 HWC image → its row of ``run``'s output; QueueFull (503) when the queue is
        full."""
        if self._loop is None or self._closing:
            raise NotReady("the batcher is not running (starting up or shutting down)")
        future: asyncio.Future[np.ndarray] = self._loop.create_future()
        item = _Item(image, future, timing or BatchTiming(), trace=spans.traced_context())
        with self._lock:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(
                    f"the inference queue is full ({self.max_queue} waiting); retry shortly"
                )
            self._queue.append(item)
            self._queued.notify()
        self._observe_depth()
        return await future

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def stop(self) -> None:
        """Refuse new work, finish everything already queued, then stop the threads."""
        self._closing = True
        while self._queue or self._taken:
            await asyncio.sleep(_DRAIN_POLL_S)
        with self._lock:
            self._stopping = True
            self._queued.notify_all()
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    # --- In an inference thread ------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._forming:
                batch = self._next_batch()
            if batch is None:
                return
            live = [item for item in batch if not item.future.done()]  # skip cancelled requests
            outcome = self._infer(live) if live else None
            self._deliver(live, outcome)

    def _next_batch(self) -> list[_Item] | None:
        """The first queued image, then whatever else is queued within ``max_delay``, up to
        ``max_batch_size``; None once stopping."""
        with self._lock:
            while not self._queue:
                if self._stopping:
                    return None
                self._queued.wait()
            batch = [self._queue.popleft()]
            self._taken += 1
            deadline = time.monotonic() + self.max_delay_s
            while len(batch) < self.max_batch_size:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                self._queued.wait(remaining)
        self._observe_depth()
        return batch

    def _infer(self, batch: list[_Item]) -> np.ndarray | ServiceError:
        started = time.perf_counter()
        try:
            # A single image needs no copy: a [1, H, W, 3] view of its own array.
            images = batch[0].image[None] if len(batch) == 1 else np.stack([i.image for i in batch])
            rows = self._run(images)
        except Exception as exc:  # the model failing is a server error for every rider
            error = InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}")
            _trace(batch, started, time.perf_counter(), error.message)
            return error
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
        return rows

    def _deliver(self, batch: list[_Item], outcome: np.ndarray | ServiceError | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._answer, batch, outcome)

    # --- On the event loop -----------------------------------------------------------------------

    def _answer(self, batch: list[_Item], outcome: np.ndarray | ServiceError | None) -> None:
        """The batch's results to its requests (one wake-up of the loop per batch)."""
        with self._lock:
            self._taken -= 1
        for row, item in enumerate(batch):
            if item.future.done():  # cancelled meanwhile (its timeout)
                continue
            if isinstance(outcome, ServiceError):
                item.future.set_exception(outcome)
            else:
                assert outcome is not None
                item.future.set_result(outcome[row])

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
