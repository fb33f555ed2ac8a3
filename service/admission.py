"""Admission control at the door: a bounded count of requests in the pipeline.

The pipeline is preprocessing (thread pool) → batching queue → inference. Without a bound at its
entrance, the preprocessing pool's own queue is unbounded: in a burst every request is decoded
and resized before the batcher's bounded queue can refuse it, so refusals come as late as the
whole backlog. Counting at the door refuses the surplus at once, before its body is read.

Slots are *taken* only once a request's body is complete: a client trickling its body (or
declaring a megabyte and sending a byte a second) would otherwise hold a slot for the whole
request timeout, and a few hundred of them locked every honest client out. ``check()`` still
refuses at once, before the body, when the pipeline is already full. A request for more
images than the capacity can never be admitted: 413 with the limit, not a 503 "retry".

Capacity = ``max_queue`` (waiting for a batch) + ``max_batch_size`` (in the running batch) +
preprocessing threads (being decoded): what the pipeline holds when every stage is full. The
counter lives on the event loop (no lock needed): entering and leaving cost an integer add.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import CLOSE, QueueFull, TooManyImages


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
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0

    def check(self) -> None:
        """Refuse (503) at once when no slot is free: before reading a body that cannot run."""
        self.take(1)
        self.in_flight -= 1

    def check_size(self, slots: int) -> None:
        if slots > self.capacity:
            raise TooManyImages(
                f"{slots} images in one request; this server takes at most {self.capacity} "
                "at once (EFFICIENTNET_MAX_QUEUE + batch size + preprocessing threads)"
            )

    def take(self, slots: int) -> None:
        self.check_size(slots)
        if self.in_flight + slots > self.capacity:
            raise QueueFull(
                f"server busy: {self.in_flight} images in the pipeline (capacity "
                f"{self.capacity}, EFFICIENTNET_MAX_QUEUE + batch size + preprocessing threads); "
                "retry shortly",
                headers=CLOSE,
            )
        self.in_flight += slots

    @contextmanager
    def admit(self, slots: int = 1) -> Iterator[Ticket]:
        """Hold ``slots`` for the duration of the block; refuses (503) at once when full."""
        self.take(slots)
        ticket = Ticket(self, slots)
        try:
            yield ticket
        finally:
            self.in_flight -= ticket.slots
