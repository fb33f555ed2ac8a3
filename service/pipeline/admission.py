"""Admission control at the door: a bounded count of requests in the pipeline.

The pipeline is decode (worker processes) → batching queue → inference. Without a bound at its
entrance, the decode pool's own queue is unbounded: in a burst every request is decoded
and resized before the batcher's bounded queue can refuse it, so refusals come as late as the
whole backlog. Counting at the door refuses the surplus at once, before its body is read.

Slots are *taken* only once a request's body is complete: a client trickling its body (or
declaring a megabyte and sending a byte a second) would otherwise hold a slot for the whole
request timeout, and a few hundred of them locked every honest client out. While its body is
read a request is a *reader* (``reading()``): readers count against the room left, so a burst
is still refused at the door before its bodies are read, but a reader that has fallen behind
(under ``FAST_BYTES_S`` after ``EVICT_AFTER_S``, with none of its body waiting in the server's
buffer: the client is slow, not the event loop) gives its place to a newcomer: it gets 408, the
newcomer is read. A trickler therefore never keeps an honest client out. A request for more
images than the capacity can never be admitted: 413 with the limit, not a 503 "retry".

Capacity = ``max_queue`` (waiting for a batch) + inference workers × ``max_batch_size`` (in the
running batches) + decode workers (being decoded): what the pipeline holds when every
stage is full. The counter lives on the event loop (no lock needed): entering and leaving cost an
integer add.

The bodies themselves are bounded in bytes: before its body is read a request reserves its
Content-Length (the upload limit when it declares none) out of the upload memory
(EFFICIENTNET_UPLOAD_MEMORY_MB), held until its answer is written. One that does not fit waits,
reading nothing (its bytes stay in the socket buffers), and gets 503 if it still does not fit
within the request timeout. Without it the capacity alone let 262 bodies of up to 20 MiB each
be held at once; at 64 phone photos in flight the service held 64 bodies of 2 MB to feed two
decode threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol

from service.config import MiB
from service.errors import CLOSE, QueueFull, TooManyImages
from service.pipeline.budget import Budget

# A reader may be evicted for a newcomer once it has been reading this long at under this rate
# (an honest upload on loopback or a LAN arrives at megabytes per second).
EVICT_AFTER_S = 0.5
FAST_BYTES_S = 16 * 1024
# The ASGI scope key under which the edge's body guard (service/edge/body_limit.py) puts a
# request's BodyProgress.
BODY_PROGRESS = "efficientnet.body_progress"


class BodyProgress(Protocol):
    """How far a request's body has come (the edge's body guard, service/edge/body_limit.py)."""

    started: float  # event-loop time
    received: int
    declared: int | None  # the Content-Length, if any

    def data_waiting(self) -> bool | None: ...

    def evict(self, message: str) -> None: ...


class Ticket:
    """The slots one request holds; grows once its image count is known (batch, /v2)."""

    def __init__(self, admission: Admission, slots: int) -> None:
        self._admission = admission
        self.slots = slots

    def grow_to(self, slots: int) -> None:
        """Hold ``slots`` in all; QueueFull (503) when the pipeline cannot take that many."""
        extra = slots - self.slots
        self._admission.check_size(slots)
        if extra > 0:
            self._admission.take(extra)
            self.slots = slots


class Admission:
    def __init__(self, capacity: int, upload_memory: int, max_upload: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self.readers: dict[int, BodyProgress | None] = {}  # requests whose body is being read
        self.uploads = Budget(upload_memory)  # bytes of the bodies held
        self._max_upload = max_upload

    @asynccontextmanager
    async def holding_body(
        self, body: BodyProgress | None, timeout_s: float
    ) -> AsyncIterator[None]:
        """Reserve the body's bytes out of the upload memory for the block, waiting until they fit;
        503 when they do not within ``timeout_s`` (module docstring)."""
        declared = body.declared if body is not None else None
        amount = min(self._max_upload if declared is None else declared, self._max_upload)
        if not self.uploads.try_take(amount):  # no timer for the usual case: it fits at once
            await self._wait_for_upload_memory(amount, timeout_s)
        try:
            yield
        finally:
            self.uploads.give(amount)

    async def _wait_for_upload_memory(self, amount: int, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self.uploads.take(amount)
        except TimeoutError:
            raise QueueFull(
                f"server busy: the bodies being served hold {self.uploads.in_use() / MiB:.0f} MiB "
                f"of the {self.uploads.total / MiB:.0f} MiB of upload memory "
                f"(EFFICIENTNET_UPLOAD_MEMORY_MB), and this upload's {amount} bytes did not fit "
                f"within {timeout_s:g} s; retry shortly",
                headers=CLOSE,
            ) from None

    @contextmanager
    def reading(self, body: BodyProgress | None) -> Iterator[None]:
        """While a request's body is read: 503 at once when there is no room for it (a burst),
        unless a reader that has fallen behind gives its place (module docstring)."""
        if self.in_flight + len(self.readers) >= self.capacity and not self._evict_one():
            raise self._full()
        token: object = body if body is not None else object()
        self.readers[id(token)] = body
        try:
            yield
        finally:
            self.readers.pop(id(token), None)

    def _evict_one(self) -> bool:
        now = asyncio.get_running_loop().time()
        behind = [
            (b.received / (now - b.started), key)
            for key, b in self.readers.items()
            if b is not None
            and now - b.started >= EVICT_AFTER_S
            and b.received < FAST_BYTES_S * (now - b.started)
            and b.data_waiting() is False
        ]
        if not behind:
            return False
        rate, key = min(behind)
        body = self.readers.pop(key)
        assert body is not None
        body.evict(
            f"request body arriving at {rate:.0f} bytes/s while the server is full: its place "
            "went to another client"
        )
        return True

    def check_size(self, slots: int) -> None:
        if slots > self.capacity:
            raise TooManyImages(
                f"{slots} images in one request; this server takes at most {self.capacity} "
                "at once (EFFICIENTNET_MAX_QUEUE + inference workers x batch size + preprocessing "
                "threads)"
            )

    def take(self, slots: int) -> None:
        self.check_size(slots)
        if self.in_flight + slots > self.capacity:
            raise self._full()
        self.in_flight += slots

    def _full(self) -> QueueFull:
        return QueueFull(
            f"server busy: {self.in_flight} images in the pipeline and {len(self.readers)} "
            f"bodies being read (capacity {self.capacity}, EFFICIENTNET_MAX_QUEUE + inference "
            "workers x batch size + preprocessing threads); retry shortly",
            headers=CLOSE,
        )

    @contextmanager
    def admit(self, slots: int = 1) -> Iterator[Ticket]:
        """Hold ``slots`` for the duration of the block; refuses (503) at once when full."""
        self.take(slots)
        ticket = Ticket(self, slots)
        try:
            yield ticket
        finally:
            self.in_flight -= ticket.slots
