"""What a decode reserves before it starts and gives back when its worker is done: its memory,
out of one budget for every decode in progress (estimated from its header, checks.py), and, for
an expensive upload, one of the expensive lane's slots (decoder.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.config import MiB
from service.errors import ImageTooLarge
from service.pipeline.decode.checks import DecodePlan

# A decode waiting this long for memory is no longer overtaken by smaller ones.
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


class DecodeBudget(Budget):
    """Bytes of decode memory in use, reserved from each upload's plan."""

    def check(self, plan: DecodePlan) -> None:
        """413 now if ``plan``'s memory could never fit, rather than after a wait."""
        if plan.memory_bytes > self.total:
            raise ImageTooLarge(
                f"decoding this {plan.width}x{plan.height} {plan.mode} image takes about "
                f"{plan.memory_bytes // MiB} MiB, over the decode memory limit of "
                f"{self.total // MiB} MiB"
            )

    async def acquire(self, plan: DecodePlan) -> None:
        """Reserve ``plan``'s memory, waiting until it fits; 413 if it never could."""
        self.check(plan)
        await self.take(plan.memory_bytes)

    def try_acquire(self, plan: DecodePlan) -> bool:
        """Reserve ``plan``'s memory only if that needs no wait (any thread)."""
        return self.try_take(plan.memory_bytes)

    def release(self, plan: DecodePlan) -> None:
        """On the event loop: the memory is free again."""
        self.give(plan.memory_bytes)


@dataclass
class _Waiter:
    amount: int
    since: float  # the budget's clock when it began to wait
    future: asyncio.Future[None]
