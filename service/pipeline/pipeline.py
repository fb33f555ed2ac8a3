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
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from service.config import MiB, Settings
from service.errors import (
    ModelRefused,
    NotReady,
    RequestTimeout,
    ServiceError,
    StartupError,
    SwapInProgress,
)
from service.metrics import Metrics
from service.pipeline import spans
from service.pipeline.admission import Admission
from service.pipeline.batcher import BatchTiming
from service.pipeline.model import ServedModel
from service.pipeline.ranking import top_k
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


@dataclass(frozen=True)
class Swap:
    """What a model swap did, for the caller and the log."""

    old: str
    new: str
    sha256: str
    load_s: float
    warm_s: float


@dataclass
class Pipeline:
    settings: Settings
    metrics: Metrics
    admission: Admission  # bounds the images in decode + queue + inference, whichever model
    executor: ThreadPoolExecutor  # the threads that plan decodes and wait on the workers
    model: ServedModel  # the model in service: a request holds it with ``using``
    started: bool = False  # warm, batching: requests are served until ``stop``
    draining: bool = False  # a shutdown signal arrived: not ready, still answering
    _swap_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)  # retires and reloads

    @classmethod
    def build(cls, settings: Settings, session: ModelSession, metrics: Metrics) -> Pipeline:
        policy = settings.batch_policy(session.provider)
        decode_threads, intra_op = settings.thread_counts()
        # Admission is the one gate: it lets in what the pipeline holds with every stage full.
        # The batcher's queue is sized to that, so an image admitted at the door is never
        # refused after its decode.
        running = policy.workers * policy.max_batch_size
        admission = Admission(
            settings.max_queue + running + decode_threads,
            settings.upload_memory_bytes,
            settings.max_upload_bytes,
        )
        metrics.upload_memory.set_function(admission.uploads.in_use)
        executor = ThreadPoolExecutor(decode_threads, thread_name_prefix="preprocess")
        model = ServedModel.build(settings, session, metrics, executor, admission.capacity)
        log.info(
            "%d in flight, queue %d, uploads %d MiB; %d decode workers (%g s, %d MiB), "
            "%d onnxruntime threads",
            policy.workers, settings.max_queue, settings.upload_memory_bytes // MiB,
            decode_threads, settings.decode_timeout_s, settings.decode_memory_bytes // MiB,
            intra_op,
        )  # fmt: skip
        return cls(settings, metrics, admission, executor, model)

    @property
    def session(self) -> ModelSession:
        """The session of the model in service now (a request uses ``using`` instead)."""
        return self.model.session

    @property
    def ready(self) -> bool:
        """What /readyz says: warm, batching, and not draining for a shutdown."""
        return self.started and not self.draining

    async def check_ready(self) -> bool:
        """``ready``, and the decode workers alive: one that died idle is replaced now (in a
        thread: a fork), so readiness fails only when no worker can be started."""
        if not self.ready:
            return False
        pool = self.model.decoder.pool
        return pool.all_alive() or await asyncio.to_thread(pool.revive)

    def using(self) -> AbstractContextManager[ServedModel]:
        """The model in service now, held until the block ends: a swap meanwhile does not
        retire it under the request."""
        return self.model.held()

    # --- Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Warm the model and start batching, then be ready."""
        await self.model.start()
        self._announce(self.model)
        self.started = True
        self.metrics.ready.set(1)

    def begin_drain(self) -> None:
        """A shutdown signal arrived: not ready from now on; requests are still answered."""
        self.draining = True
        self.metrics.ready.set(0)

    def begin_shutdown(self) -> None:
        """The server stops taking connections: decodes get only a short while from now on."""
        self.model.decoder.begin_shutdown()

    async def stop(self) -> None:
        """Not ready; then the model (its decode workers, its queued batches), the threads."""
        self.started = False
        self.metrics.ready.set(0)
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.model.stop()
        self.executor.shutdown(wait=True)

    def _announce(self, model: ServedModel) -> None:
        session = model.session
        self.metrics.set_model(
            variant=session.metadata.variant,
            provider=session.provider,
            sha256=session.sha256,
            ort_version=ort.__version__,
        )
        log.info(
            "loaded %s as %s (variant %s, %d classes, sha256 %s…) on %s; batch ≤ %d, delay %g ms",
            session.path, session.metadata.model_name, session.metadata.variant, session.classes,
            session.sha256[:12], session.provider, model.policy.max_batch_size,
            model.policy.max_delay_ms,
        )  # fmt: skip

    # --- A model swap ---------------------------------------------------------------------------

    async def swap(self, path: Path, expected_name: str | None = None) -> Swap:
        """Load ``path``, check it against the contract (and ``expected_name``), warm it beside
        the model in service, then put it in service at once. The old one answers the requests
        that hold it, then its memory goes. A bad file is ModelRefused (400) and changes
        nothing; SwapInProgress (409) while another swap runs."""
        if self._swap_lock.locked():
            raise SwapInProgress("another model is being loaded; retry when it is in service")
        async with self._swap_lock:
            if not self.started or self.draining:
                raise NotReady("the service is starting or shutting down")
            started = time.perf_counter()
            session = await asyncio.to_thread(self._load, path, expected_name)
            loaded = time.perf_counter()
            model = ServedModel.build(
                self.settings, session, self.metrics, self.executor, self.admission.capacity
            )
            warm_s = await self._warm(model)
            old, self.model = self.model, model
            self._announce(model)
            swap = Swap(old.name, model.name, session.sha256, loaded - started, warm_s)
            log.info(
                "swapped %s for %s: loaded and checked in %.2f s, warmed in %.2f s",
                swap.old, swap.new, swap.load_s, swap.warm_s,
            )  # fmt: skip
            task = asyncio.create_task(self._retire(old), name="retire-model")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            return swap

    def reload_in_background(self) -> None:
        """Swap in the configured model file again (SIGHUP: an operator replaced it); the
        outcome is logged, a refusal leaves the model in service serving."""
        task = asyncio.create_task(self._reload(), name="reload-model")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _reload(self) -> None:
        path = self.settings.resolved_model_path
        log.info("SIGHUP: reloading %s", path)
        try:
            await self.swap(path)
        except ServiceError as exc:
            log.error("SIGHUP: %s; still serving %s", exc.message, self.model.name)

    def _load(self, path: Path, expected_name: str | None) -> ModelSession:
        try:
            session = ModelSession.load(self.settings, path)
        except StartupError as exc:
            raise ModelRefused(f"model not swapped: {exc}") from None
        if expected_name is not None and session.metadata.model_name != expected_name:
            raise ModelRefused(
                f"model not swapped: {path} holds model {session.metadata.model_name!r}, "
                f"not {expected_name!r}"
            )
        return session

    async def _warm(self, model: ServedModel) -> float:
        try:
            return await model.start()
        except Exception as exc:  # a graph that loads but cannot run is refused too
            await model.stop()
            raise ModelRefused(f"model not swapped: its warm-up failed: {exc}") from None

    async def _retire(self, model: ServedModel) -> None:
        """Once no request holds ``model`` (at most a request's whole life), stop it."""
        started = time.perf_counter()
        # A request holds a model from before its body is read to its answer; both are bounded
        # by EFFICIENTNET_REQUEST_TIMEOUT_S.
        if not await model.unused(2 * self.settings.request_timeout_s):
            log.warning("%d requests still held %s; stopping it", model.users, model.name)
        await model.stop()
        log.info("retired %s after %.2f s", model.name, time.perf_counter() - started)

    # --- The path of an image -------------------------------------------------------------------

    async def decode(self, model: ServedModel, data: bytes) -> np.ndarray:
        """Encoded image → ``model``'s uint8 input, in a decode worker, within its budgets."""
        with spans.stage(spans.DECODE):
            started = time.perf_counter()
            image = await model.decoder.preprocess(data)
            self.metrics.preprocess.observe(time.perf_counter() - started)
            return image

    async def to_pixels(self, convert: Callable[..., T], *args: Any) -> T:
        """A CPU-bound conversion of request tensors, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, convert, *args)

    async def classify(self, model: ServedModel, data: bytes, k: int) -> Classification:
        """One encoded image → ``model``'s top ``k`` classes; ServiceError (4xx/5xx) if
        refused."""
        return await self.within_timeout(self._classify(model, data, k), "classification")

    async def _classify(self, model: ServedModel, data: bytes, k: int) -> Classification:
        started = time.perf_counter()
        image = await self.decode(model, data)
        decoded = time.perf_counter()
        timing = BatchTiming()
        probabilities = await model.batcher.submit(image, timing)
        labels = model.session.metadata.labels
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
        self,
        model: ServedModel,
        images: Sequence[bytes] | Sequence[np.ndarray],
        name: str = "image",
    ) -> np.ndarray:
        """Each image (encoded bytes, or ``model``'s uint8 input) → softmax ``[N, classes]``;
        the first refusal fails them all, its message naming the element (``name[i]: ...``)."""
        work = [self._probabilities(model, i, image, name) for i, image in enumerate(images)]
        rows = await self.within_timeout(_all_or_nothing(work), "inference")
        return np.stack(rows)

    async def _probabilities(
        self, model: ServedModel, index: int, image: bytes | np.ndarray, name: str
    ) -> np.ndarray:
        if isinstance(image, bytes):
            try:
                image = await self.decode(model, image)
            except ServiceError as exc:  # say which element, keep the status (400/413/415)
                raise ServiceError(
                    f"input '{name}'[{index}]: {exc.message}",
                    status_code=exc.status_code,
                    code=exc.code,
                    headers=exc.headers,
                ) from None
        return await model.batcher.submit(image)

    async def within_timeout(self, work: Awaitable[T], what: str) -> T:
        """``work`` under EFFICIENTNET_REQUEST_TIMEOUT_S; RequestTimeout (504) past it.

        In the request's own task (``asyncio.timeout``, not ``wait_for``'s task of its own): one
        task and one event-loop turn fewer per request."""
        timeout = self.settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await work
        except TimeoutError:
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
