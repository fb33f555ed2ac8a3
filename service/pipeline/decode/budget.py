"""One memory budget for every decode in progress, reserved from each upload's header estimate
(checks.py) before its decode starts and released when its worker is done."""

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


class DecodeBudget:
    """Bytes of decode memory in use, out of a total; a reservation waits until it fits.

    First fit in arrival order, so a big image waiting does not hold up small ones; but once a
    waiter has waited ``aging_s``, nobody behind it is served first, so a steady stream of small
    images cannot starve a big one until its request times out.

    Waiting happens on the event loop; ``try_acquire`` may be called from a decode thread, so
    the amount free is changed under a lock.
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

    async def acquire(self, plan: DecodePlan) -> None:
        """Reserve ``plan``'s memory, waiting until it fits; 413 if it never could."""
        amount = plan.memory_bytes
        if amount > self.total:
            raise ImageTooLarge(
                f"decoding this {plan.width}x{plan.height} {plan.mode} image takes about "
                f"{amount // MiB} MiB, over the decode memory limit of {self.total // MiB} MiB"
            )
        await self._acquire(amount)

    def try_acquire(self, plan: DecodePlan) -> bool:
        """Reserve ``plan``'s memory only if that needs no wait (any thread); False otherwise,
        and the caller takes ``acquire``'s path (which also gives the 413)."""
        with self._lock:
            return self._take_now(plan.memory_bytes)

    def release(self, plan: DecodePlan) -> None:
        """On the event loop: the memory is free again, and waiters that now fit go."""
        with self._lock:
            self.free += plan.memory_bytes
        self._wake()

    def _take_now(self, amount: int) -> bool:
        if amount <= self.free and not self._aged_waiter(self._clock()):
            self.free -= amount
            return True
        return False

    async def _acquire(self, amount: int) -> None:
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
