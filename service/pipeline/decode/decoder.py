"""Upload bytes → model input under every bound: the structural checks and the estimates of memory
and time (checks.py, cost.py), the memory budget and the expensive lane (budget.py) and a
worker process (workers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from model_contract import Preprocessing
from service.pipeline.budget import Budget
from service.pipeline.decode.budget import DecodeBudget
from service.pipeline.decode.checks import DecodePlan, plan_decode
from service.pipeline.decode.image import preprocess
from service.pipeline.decode.workers import DecodeLimits, DecodePool


def expensive_slots(workers: int) -> int:
    """Expensive decodes at once: every worker but one, so a cheap upload always finds a worker,
    and a decode thread (one per worker), that no expensive decode holds.

    With one worker there is no lane to keep: expensive uploads take it in turn, and a cheap
    upload waits behind at most one expensive decode (bounded by EFFICIENTNET_DECODE_TIMEOUT_S)
    rather than expensive ones never decoding.
    """
    return max(1, workers - 1)


@dataclass
class _Trip:
    """One upload's way through the decoder, in one or two trips to a decode thread: what it
    holds, given back once neither a thread nor the request needs it."""

    plan: DecodePlan | None = None
    laned: bool = False  # holds one of the expensive lane's slots
    reserved: bool = False  # holds the plan's memory
    in_thread: bool = False  # a decode thread has it
    left: bool = False  # the request is done with it: answered, failed or cancelled (its timeout)


class Decoder:
    """Upload bytes → model input under the limits; what the request handlers call.

    One trip to a decode thread plans the upload, takes what its decode needs and decodes it:
    a quick one (a baseline JPEG of bounded size, checks.py) in that thread, any other in a
    worker. What it takes first: its memory and, for an expensive upload (cost.py), a slot of
    the expensive lane, which leaves one worker to cheap uploads. Only when one of them is not
    free at once does the upload wait on the event loop, holding no thread, and take a second
    trip. Each trip costs
    ~125 µs of CPU and as much latency on the 2-core machine (BENCHMARKS.md, "Upload path").
    """

    def __init__(self, spec: Preprocessing, limits: DecodeLimits, executor: Executor) -> None:
        self.spec, self.limits = spec, limits
        self._executor = executor
        self.budget = DecodeBudget(limits.memory_bytes)
        self.lane = Budget(expensive_slots(limits.workers))
        self.pool = DecodePool(spec, limits)

    async def preprocess(self, data: bytes) -> np.ndarray:
        trip = _Trip()
        try:
            image = await self._in_thread(self._plan_and_decode, trip, data)
            while image is None:
                await self._wait_for_room(trip)
                image = await self._in_thread(self._decode_if_free, trip, data)
            return image
        finally:
            trip.left = True
            if not trip.in_thread:  # else the thread's end gives back what it holds
                self._release(trip)

    def _plan_and_decode(self, trip: _Trip, data: bytes) -> np.ndarray | None:
        """In a decode thread: the plan (413 now if its memory never fits), then the decode."""
        trip.plan = plan_decode(data, self.limits.max_pixels, self.spec.resize_size)
        self.budget.check(trip.plan)
        return self._decode_if_free(trip, data)

    def _decode_if_free(self, trip: _Trip, data: bytes) -> np.ndarray | None:
        """In a decode thread: the decode, once the upload holds its lane slot (if expensive)
        and its memory; None, holding no worker, if either cannot be taken now."""
        assert trip.plan is not None
        if trip.left:
            return None
        if trip.plan.expensive and not trip.laned:
            trip.laned = self.lane.try_take(1)
            if not trip.laned:
                return None
        if not trip.reserved:
            trip.reserved = self.budget.try_acquire(trip.plan)
            if not trip.reserved:
                return None
        if trip.plan.quick:  # bounded by its pixels: no worker needed to stop it
            return preprocess(data, self.spec, self.limits.max_pixels)
        return self.pool.run(data)

    async def _wait_for_room(self, trip: _Trip) -> None:
        """On the event loop: wait for what the upload lacks, the lane's slot before memory."""
        assert trip.plan is not None
        if trip.plan.expensive and not trip.laned:
            await self.lane.take(1)
            trip.laned = True
        if not trip.reserved:
            await self.budget.acquire(trip.plan)
            trip.reserved = True

    async def _in_thread(
        self, work: Callable[[_Trip, bytes], np.ndarray | None], trip: _Trip, data: bytes
    ) -> np.ndarray | None:
        future = asyncio.get_running_loop().run_in_executor(self._executor, work, trip, data)
        trip.in_thread = True
        future.add_done_callback(lambda f: self._settle(trip, f))
        return await asyncio.shield(future)

    def _settle(self, trip: _Trip, future: asyncio.Future[np.ndarray | None]) -> None:
        # What the trip holds is in use until the worker is done, even if the request was
        # cancelled (its timeout) meanwhile: given back now, not when the waiting stopped.
        trip.in_thread = False
        if trip.left:
            self._release(trip)
        if not future.cancelled():
            future.exception()  # retrieved: an abandoned decode's error is not "unhandled"

    def _release(self, trip: _Trip) -> None:
        if trip.reserved:
            assert trip.plan is not None
            trip.reserved = False
            self.budget.release(trip.plan)
        if trip.laned:
            trip.laned = False
            self.lane.give(1)

    def begin_shutdown(self) -> None:
        """A shutdown has begun: from now on a decode gets at most SHUTDOWN_DECODE_S (503
        not_ready past it), so the drain waits on no slow decode."""
        self.pool.begin_shutdown()

    def close(self) -> None:
        self.pool.close()
