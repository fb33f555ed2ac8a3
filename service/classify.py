"""The one way an upload becomes predictions: decode (worker process) → batcher → softmax/top-k.

``/classify`` and ``/classify/batch`` call ``classify_image_bytes``; the Open Inference
Protocol's BYTES input shares ``preprocess_bytes`` and ``within_timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np

from .batcher import BatchTiming
from .errors import RequestTimeout, ServiceError
from .ranking import softmax, top_k
from .runtime import Runtime
from .schemas import ClassifyResponse, Prediction, Timing

T = TypeVar("T")

DEFAULT_TOP_K = 5


def resolve_top_k(requested: int | None, classes: int) -> int:
    """The ``top_k`` to answer with: 5 by default, or every class of a smaller model; a request
    for more than the model has is refused (422, naming the bound), never silently cut."""
    if requested is None:
        return min(DEFAULT_TOP_K, classes)
    if requested > classes:
        raise ServiceError(
            f"query.top_k: this model has {classes} classes, so top_k must be from 1 to "
            f"{classes}; got {requested}",
            status_code=422,
            code="invalid_request",
        )
    return requested


async def preprocess_bytes(runtime: Runtime, data: bytes) -> np.ndarray:
    """Decode + resize + crop in a decode worker process, within its budgets (service/decoding)."""
    started = time.perf_counter()
    image = await runtime.decoder.preprocess(data)
    runtime.metrics.preprocess.observe(time.perf_counter() - started)
    return image


async def _classify(runtime: Runtime, data: bytes, k: int) -> ClassifyResponse:
    started = time.perf_counter()
    image = await preprocess_bytes(runtime, data)
    preprocessed = time.perf_counter()
    timing = BatchTiming()
    logits = await runtime.batcher.submit(image, timing)
    probabilities = softmax(logits)
    labels = runtime.session.metadata.labels
    predictions = [
        Prediction(index=int(i), label=labels[i], score=float(probabilities[i]))
        for i in top_k(probabilities, k)
    ]
    ms = 1000.0
    return ClassifyResponse(
        variant=runtime.session.metadata.variant,
        predictions=predictions,
        timing_ms=Timing(
            preprocess=(preprocessed - started) * ms,
            queue_wait=timing.queue_wait * ms,
            inference=timing.inference * ms,
            total=(time.perf_counter() - started) * ms,
            batch_size=max(timing.batch_size, 1),
        ),
    )


async def within_timeout(runtime: Runtime, work: Awaitable[T], what: str) -> T:
    """``work`` under EFFICIENTNET_REQUEST_TIMEOUT_S; RequestTimeout (504) past it."""
    timeout = runtime.settings.request_timeout_s
    try:
        return await asyncio.wait_for(work, timeout)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"{what} did not finish within {timeout:g} s") from None


async def classify_image_bytes(runtime: Runtime, data: bytes, top_k: int) -> ClassifyResponse:
    """Encoded image bytes → top-k predictions; ServiceError (4xx/5xx) for anything refused."""
    return await within_timeout(runtime, _classify(runtime, data, top_k), "classification")
