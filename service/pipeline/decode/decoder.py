"""Upload bytes → model input under every bound: the structural checks and the memory estimate
(checks.py), the memory budget (budget.py) and a worker process (workers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from model_contract import Preprocessing
from service.pipeline.decode.budget import DecodeBudget
from service.pipeline.decode.checks import DecodePlan, plan_decode
from service.pipeline.decode.workers import DecodeLimits, DecodePool


@dataclass
class _Trip:
    """What one trip to a decode thread did, for the loop to settle afterwards."""

    plan: DecodePlan | None = None
    reserved: bool = False  # the plan's memory is held until the trip is over
    abandoned: bool = False  # the request stopped waiting (its timeout): decode nothing


class Decoder:
    """Upload bytes → model input under the limits; what the request handlers call.

    One trip to a decode thread plans the upload, reserves its memory and has a worker decode
    it; only when the memory is not free at once does the upload wait on the event loop and
    take a second trip. Each trip costs ~125 µs of CPU and as much latency on the 2-core
    machine (BENCHMARKS.md, "Upload path").
    """

    def __init__(self, spec: Preprocessing, limits: DecodeLimits, executor: Executor) -> None:
        self.spec, self.limits = spec, limits
        self._executor = executor
        self._budget = DecodeBudget(limits.memory_bytes)
        self.pool = DecodePool(spec, limits)

    async def preprocess(self, data: bytes) -> np.ndarray:
        trip = _Trip()
        image = await self._in_thread(self._plan_and_decode, trip, data)
        if image is not None:
            return image
        assert trip.plan is not None
        await self._budget.acquire(trip.plan)  # waits for memory; 413 if it never fits
        trip = _Trip(trip.plan, reserved=True)
        return await self._in_thread(self._decode, trip, data)

    def _plan_and_decode(self, trip: _Trip, data: bytes) -> np.ndarray | None:
        """In a decode thread: the plan, then the decode if its memory is free now."""
        trip.plan = plan_decode(data, self.limits.max_pixels, self.spec.resize_size)
        if trip.abandoned or not self._budget.try_acquire(trip.plan):
            return None
        trip.reserved = True
        return self.pool.run(data)

    def _decode(self, trip: _Trip, data: bytes) -> np.ndarray | None:
        return None if trip.abandoned else self.pool.run(data)

    async def _in_thread(
        self, work: Callable[[_Trip, bytes], np.ndarray | None], trip: _Trip, data: bytes
    ) -> np.ndarray | None:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, work, trip, data)
        except BaseException:
            self._settle(trip)
            raise
        future.add_done_callback(lambda f: self._settle(trip, f))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            trip.abandoned = True
            raise

    def _settle(self, trip: _Trip, future: asyncio.Future[np.ndarray | None] | None = None) -> None:
        # The memory is in use until the worker is done, even if the request was cancelled
        # (its timeout) meanwhile: released now, not when the waiting stopped.
        if trip.reserved:
            assert trip.plan is not None
            self._budget.release(trip.plan)
        if future is not None and not future.cancelled():
            future.exception()  # retrieved: an abandoned decode's error is not "unhandled"

    def begin_shutdown(self) -> None:
        """A shutdown has begun: from now on a decode gets at most SHUTDOWN_DECODE_S (503
        not_ready past it), so the drain waits on no slow decode."""
        self.pool.begin_shutdown()

    def close(self) -> None:
        self.pool.close()
