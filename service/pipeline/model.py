"""One model in service: its onnxruntime session, the decode workers sized for its input, and the
batcher that runs it. A swap (pipeline.py) builds a second one beside the first; each request
holds the one it started on until its answer is out, so no request mixes two models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from service.config import BatchPolicy, Settings
from service.metrics import Metrics
from service.pipeline.batcher import Batcher, RunFn
from service.pipeline.decode.decoder import Decoder
from service.pipeline.decode.workers import DecodeLimits
from service.pipeline.ranking import softmax
from service.pipeline.session import ModelSession


def probabilities_of(session: ModelSession) -> RunFn:
    """A batch → its softmax rows, in the inference thread that ran it: one softmax per batch
    rather than one per image on the event loop, which spent ~6 % of its time per web photo
    there (BENCHMARKS.md, "Softmax where the batch ran")."""

    def run(images: np.ndarray) -> np.ndarray:
        return softmax(session.run(images))

    return run


@dataclass
class ServedModel:
    session: ModelSession
    policy: BatchPolicy
    decoder: Decoder  # its workers crop to this model's input size
    batcher: Batcher
    users: int = 0  # requests holding this model
    _unused: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(
        cls,
        settings: Settings,
        session: ModelSession,
        metrics: Metrics,
        executor: Executor,
        capacity: int,
    ) -> ServedModel:
        """``capacity``: the images admission lets in at most, so the queue never refuses one
        admitted at the door (pipeline.py)."""
        policy = settings.batch_policy(session.provider)
        decode_threads, _ = settings.thread_counts()
        batcher = Batcher(
            probabilities_of(session),
            max_batch_size=policy.max_batch_size,
            max_delay_ms=policy.max_delay_ms,
            max_queue=capacity,
            workers=policy.workers,
            metrics=metrics,
        )
        limits = DecodeLimits(
            workers=decode_threads,
            timeout_s=settings.decode_timeout_s,
            memory_bytes=settings.decode_memory_bytes,
            max_pixels=settings.max_image_pixels,
            max_input_bytes=settings.max_upload_bytes,
        )
        decoder = Decoder(session.metadata.preprocessing, limits, executor)
        return cls(session, policy, decoder, batcher)

    @property
    def name(self) -> str:
        return self.session.metadata.model_name

    async def start(self) -> float:
        """Warm the session (first runs allocate and pick kernels), start batching; seconds."""
        started = time.perf_counter()
        await asyncio.to_thread(self.session.warm_up, {1, self.policy.max_batch_size})
        self.batcher.start()
        return time.perf_counter() - started

    @contextmanager
    def held(self) -> Iterator[ServedModel]:
        """Hold this model for a request: retiring it waits until nobody does."""
        self.users += 1
        self._unused.clear()
        try:
            yield self
        finally:
            self.users -= 1
            if self.users == 0:
                self._unused.set()

    async def unused(self, timeout_s: float) -> bool:
        """Wait until no request holds this model; False if some still did after ``timeout_s``."""
        if self.users == 0:
            return True
        try:
            await asyncio.wait_for(self._unused.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """The decode workers (a decode still running must not hold up an exit), then the
        queued batches."""
        self.decoder.close()
        await self.batcher.stop()
