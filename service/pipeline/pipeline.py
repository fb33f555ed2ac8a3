"""The one way images become predictions: admission → decode → batcher → session → ranking.

Both protocols call a ``Pipeline``: the service's REST API (``classify``, one upload) and the
Open Inference Protocol (``probabilities``, the images of one request, all or nothing). It knows
no HTTP: requests reach it as bytes or pixels and leave as numbers or ``ServiceError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from service.config import BatchPolicy, MiB, Settings
from service.errors import RequestTimeout, ServiceError
from service.metrics import Metrics
from service.pipeline import spans
from service.pipeline.admission import Admission
from service.pipeline.batcher import Batcher, BatchTiming
from service.pipeline.decode.decoder import Decoder
from service.pipeline.decode.workers import DecodeLimits
from service.pipeline.ranking import softmax, top_k
from service.pipeline.session import ModelSession

log = logging.getLogger("service")

T = TypeVar("T")

MS = 1000.0


@dataclass(frozen=True)
class Timing:
    """Where the time went for one image, in milliseconds."""

    preprocess: float
    queue_wait: float
    inference: float
    total: float
    batch_size: int


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Classification:
    predictions: list[Prediction]  # best first
    timing: Timing


@dataclass
class Pipeline:
    settings: Settings
    session: ModelSession
    metrics: Metrics
    policy: BatchPolicy
    admission: Admission  # bounds the images in decode + queue + inference
    decoder: Decoder  # decodes uploads in worker processes, within time and memory budgets
    batcher: Batcher
    executor: ThreadPoolExecutor  # the threads that plan decodes and wait on the workers
    ready: bool = False

    @classmethod
    def build(cls, settings: Settings, session: ModelSession, metrics: Metrics) -> Pipeline:
        policy = settings.batch_policy(session.provider)
        decode_threads, intra_op = settings.thread_counts()
        # Admission is the one gate: it lets in what the pipeline holds with every stage full.
        # The batcher's queue is sized to that, so an image admitted at the door is never
        # refused after its decode.
        running = policy.workers * policy.max_batch_size
        admission = Admission(settings.max_queue + running + decode_threads)
        batcher = Batcher(
            session.run,
            max_batch_size=policy.max_batch_size,
            max_delay_ms=policy.max_delay_ms,
            max_queue=admission.capacity,
            workers=policy.workers,
            metrics=metrics,
        )
        executor = ThreadPoolExecutor(decode_threads, thread_name_prefix="preprocess")
        limits = DecodeLimits(
            workers=decode_threads,
            timeout_s=settings.decode_timeout_s,
            memory_bytes=settings.decode_memory_bytes,
            max_pixels=settings.max_image_pixels,
            max_input_bytes=settings.max_upload_bytes,
        )
        decoder = Decoder(session.metadata.preprocessing, limits, executor)
        metrics.set_model(
            variant=session.metadata.variant,
            provider=session.provider,
            sha256=session.sha256,
            ort_version=ort.__version__,
        )
        log.info(
            "loaded %s as %s (variant %s, %d classes, sha256 %s…) on %s; batch ≤ %d, delay %g ms, "
            "%d in flight, queue %d; %d decode workers (%g s, %d MiB), %d onnxruntime threads",
            session.path, session.metadata.model_name, session.metadata.variant, session.classes,
            session.sha256[:12], session.provider,
            policy.max_batch_size, policy.max_delay_ms, policy.workers, settings.max_queue,
            decode_threads, limits.timeout_s, limits.memory_bytes // MiB, intra_op,
        )  # fmt: skip
        return cls(settings, session, metrics, policy, admission, decoder, batcher, executor)

    # --- Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Warm the session (first runs allocate and pick kernels), start batching, be ready."""
        await asyncio.to_thread(self.session.warm_up, {1, self.policy.max_batch_size})
        self.batcher.start()
        self.ready = True
        self.metrics.ready.set(1)

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived: decodes get only a short while from now on."""
        self.decoder.begin_shutdown()

    async def stop(self) -> None:
        """Not ready; then the decode workers (a decode still running must not hold up the
        exit), the queued batches, and the threads."""
        self.ready = False
        self.metrics.ready.set(0)
        self.decoder.close()
        await self.batcher.stop()
        self.executor.shutdown(wait=True)

    # --- The path of an image -------------------------------------------------------------------

    async def decode(self, data: bytes) -> np.ndarray:
        """Encoded image → the graph's uint8 input, in a decode worker, within its budgets."""
        with spans.stage(spans.DECODE):
            started = time.perf_counter()
            image = await self.decoder.preprocess(data)
            self.metrics.preprocess.observe(time.perf_counter() - started)
            return image

    async def to_pixels(self, convert: Callable[..., T], *args: Any) -> T:
        """A CPU-bound conversion of request tensors, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, convert, *args)

    async def classify(self, data: bytes, k: int) -> Classification:
        """One encoded image → its top ``k`` classes; ServiceError (4xx/5xx) if refused."""
        return await self.within_timeout(self._classify(data, k), "classification")

    async def _classify(self, data: bytes, k: int) -> Classification:
        started = time.perf_counter()
        image = await self.decode(data)
        decoded = time.perf_counter()
        timing = BatchTiming()
        probabilities = softmax(await self.batcher.submit(image, timing))
        labels = self.session.metadata.labels
        predictions = [
            Prediction(int(i), labels[i], float(probabilities[i])) for i in top_k(probabilities, k)
        ]
        return Classification(
            predictions,
            Timing(
                preprocess=(decoded - started) * MS,
                queue_wait=timing.queue_wait * MS,
                inference=timing.inference * MS,
                total=(time.perf_counter() - started) * MS,
                batch_size=max(timing.batch_size, 1),
            ),
        )

    async def probabilities(
        self, images: Sequence[bytes] | Sequence[np.ndarray], name: str = "image"
    ) -> np.ndarray:
        """Each image (encoded bytes, or the graph's uint8 input) → softmax ``[N, classes]``;
        the first refusal fails them all, its message naming the element (``name[i]: ...``)."""
        work = [self._logits(i, image, name) for i, image in enumerate(images)]
        rows = await self.within_timeout(_all_or_nothing(work), "inference")
        return softmax(np.stack(rows))

    async def _logits(self, index: int, image: bytes | np.ndarray, name: str) -> np.ndarray:
        if isinstance(image, bytes):
            try:
                image = await self.decode(image)
            except ServiceError as exc:  # say which element, keep the status (400/413/415)
                raise ServiceError(
                    f"input '{name}'[{index}]: {exc.message}",
                    status_code=exc.status_code,
                    code=exc.code,
                    headers=exc.headers,
                ) from None
        return await self.batcher.submit(image)

    async def within_timeout(self, work: Awaitable[T], what: str) -> T:
        """``work`` under EFFICIENTNET_REQUEST_TIMEOUT_S; RequestTimeout (504) past it."""
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(work, timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"{what} did not finish within {timeout:g} s") from None


async def _all_or_nothing(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """gather, but the first failure cancels the rest (their batcher slots are then skipped)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
