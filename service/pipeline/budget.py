"""A budget of units in use out of a total (bytes of memory, or slots) that a reservation waits
on until it fits: the decode memory and the expensive lane (decode/budget.py, decode/decoder.py)
and the upload bodies held at once (admission.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# A reservation waiting this long is no longer overtaken by smaller ones.
BUDGET_AGING_S = 1.0


class Budget:
    """Units in use out of a total (bytes of memory, or slots); a reservation waits until it fits.

    First fit in arrival order, so a big image waiting does not hold up small ones; but once a
    waiter has waited ``aging_s``, nobody behind it is served first, so a steady stream of small
    images cannot starve a big one until its request times out. Reserved one unit at a time
    (the lane's slots), first fit is first come, first served.

    Waiting happens on the event loop; ``try_take`` may be called from a decode thread, so the
    amount free is changed under a lock.
    """

    def __init__(
        self,
        total: int,
        aging_s: float = BUDGET_AGING_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.free = total
        self.aging_s = aging_s
        self._clock = clock
        self._waiters: list[_Waiter] = []  # in arrival order
        self._lock = threading.Lock()

    def in_use(self) -> int:
        return self.total - self.free

    def try_take(self, amount: int) -> bool:
        """Reserve ``amount`` only if that needs no wait (any thread); False otherwise, and the
        caller waits in ``take`` on the event loop, holding no thread meanwhile."""
        with self._lock:
            return self._take_now(amount)

    def give(self, amount: int) -> None:
        """On the event loop: ``amount`` is free again, and waiters that now fit go."""
        with self._lock:
            self.free += amount
        self._wake()

    def _take_now(self, amount: int) -> bool:
        if amount <= self.free and not self._aged_waiter(self._clock()):
            self.free -= amount
            return True
        return False

    async def take(self, amount: int) -> None:
        """On the event loop: reserve ``amount``, waiting until it fits (at most ``total``)."""
        self._wake()  # an aged waiter may have become due: it goes first
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._take_now(amount):
                return
            waiter = _Waiter(amount, self._clock(), loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                if waiter.future.done() and not waiter.future.cancelled():
                    self.free += amount  # granted as we were cancelled: give it back
                self._waiters = [w for w in self._waiters if w is not waiter]
            self._wake()
            raise

    def _aged_waiter(self, now: float) -> bool:
        return any(now - w.since >= self.aging_s for w in self._waiters)

    def _wake(self) -> None:
        now = self._clock()
        with self._lock:
            for waiter in list(self._waiters):
                if waiter.future.done():
                    continue
                if waiter.amount <= self.free:
                    self.free -= waiter.amount
                    self._waiters.remove(waiter)
                    waiter.future.set_result(None)
                elif now - waiter.since >= self.aging_s:
                    return  # it has waited long enough: nobody behind it goes first


@dataclass
class _Waiter:
    amount: int
    since: float  # the budget's clock when it began to wait
    future: asyncio.Future[None]
