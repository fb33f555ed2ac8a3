"""The pipeline's stage spans, on OpenTelemetry's API alone (the set-up is service/tracing.py).

A stage span is recorded only when the request's own span is (tracing on and the request
sampled). Otherwise each call costs one context lookup: no span object is made, not even the
API's no-op one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

# The four stages of one request, as span names (docs/operating.md lists them).
ADMISSION = "admission"  # at the door until it holds its pipeline slots (its body read)
DECODE = "decode"  # the upload decoded, resized and cropped in a decode worker
QUEUE_WAIT = "queue_wait"  # in the batching queue until its batch starts
INFERENCE = "inference"  # the session.run of the batch it rode in
BATCH_SIZE = "efficientnet.batch_size"  # images in that session.run

_tracer = trace.get_tracer("service.pipeline")  # the global provider's, once one is set
_UNTRACED = nullcontext()


def _recording() -> bool:
    return trace.get_current_span().is_recording()


def stage(name: str) -> AbstractContextManager[object]:
    """A child span of the current one around a stage that runs in this task."""
    return _tracer.start_as_current_span(name) if _recording() else _UNTRACED


def traced_context() -> Context | None:
    """The current context when its span is recorded, to parent spans recorded later from
    elsewhere (the batcher records a batch's spans once it has run); else None."""
    return otel_context.get_current() if _recording() else None


class Clock:
    """``time.perf_counter()`` readings → the epoch nanoseconds spans are stamped in, anchored
    now: both clocks read together, so a conversion is as exact as the perf counter."""

    def __init__(self) -> None:
        self._epoch_ns = time.time_ns()
        self._perf = time.perf_counter()

    def ns(self, perf: float) -> int:
        return self._epoch_ns - round((self._perf - perf) * 1e9)


def record(
    name: str,
    parent: Context,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, AttributeValue],
    error: str | None = None,
) -> None:
    """A span under ``parent`` that has already happened, from ``start_ns`` to ``end_ns``."""
    span = _tracer.start_span(name, context=parent, start_time=start_ns, attributes=attributes)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)
