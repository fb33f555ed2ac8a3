"""Request bodies bounded while they stream: in bytes (413), in time and in rate (408).

It reads uvicorn's request cycle (``receive.__self__``) to tell a slow client from a busy event
loop, which is why it lives in the edge package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import count, service_error_response
from service.errors import CLOSE, BodyTimeout, BodyTooSlow, PayloadTooLarge, ServiceError
from service.metrics import Metrics
from service.pipeline.admission import BODY_PROGRESS
from service.request_id import request_id_of


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# How often a body that has stalled is checked against the minimum rate (and for eviction).
RATE_CHECK_S = 1.0


@dataclass(frozen=True)
class BodyRate:
    """A body must average ``min_bytes_s`` once ``grace_s`` have passed (0: no minimum)."""

    min_bytes_s: float = 0.0
    grace_s: float = 0.0


class _BodyGuard:
    """Wraps receive/send for one request: counts body bytes and bounds the time to read them
    (in all: the request timeout; and in rate: ``BodyRate``, so a trickle is refused early)."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        max_bytes: int,
        timeout_s: float,
        on_error: Callable[[ServiceError], None],
        rate: BodyRate,
        request_id: str,
        declared: int | None,
    ) -> None:
        self.declared = declared  # the Content-Length (admission reserves it)
        self._rate = rate
        self._request_id = request_id
        self.started = asyncio.get_running_loop().time()
        # uvicorn's receive is its RequestResponseCycle's bound method; the cycle's buffer says
        # whether body bytes are waiting to be read (a client that is merely behind in a busy
        # event loop) or none have come (a client that is slow). Other servers: unknown.
        self._server_cycle = getattr(receive, "__self__", None)
        self._on_error = on_error
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._deadline: float | None = None
        self.received = 0
        self._body_done = False
        self.failure: ServiceError | None = None
        self.response_started = False
        self._swallow = False

    async def receive(self) -> Message:
        if self.failure is not None:
            raise self.failure
        if self._body_done:  # after the body only http.disconnect remains: no deadline
            return await self._receive()
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._timeout_s
        message = await self._next_message(loop)
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self._body_done = not message.get("more_body", False)
            if self.received > self._max_bytes:
                self.failure = PayloadTooLarge(
                    f"request body over the limit of {self._max_bytes} bytes", headers=CLOSE
                )
                raise self.failure
            if not self._body_done:
                self._check_rate(loop.time())
        return message

    async def _next_message(self, loop: asyncio.AbstractEventLoop) -> Message:
        """The next message, or 408 once the deadline passes or the body falls below the rate."""
        assert self._deadline is not None
        while True:
            if self.failure is not None:  # evicted (service/pipeline/admission.py)
                raise self.failure
            if self._message_ready():
                # No wait, so no timer: a timer per chunk costs a 2 MB upload (~10 chunks of
                # 256 kB) a callback and a cancellation each.
                return await self._receive()
            wait = min(self._deadline - loop.time(), RATE_CHECK_S)
            try:
                # A cancelled uvicorn receive() loses nothing: the body stays buffered. In this
                # task (``asyncio.timeout``): ``wait_for`` would start a task per chunk.
                async with asyncio.timeout(max(wait, 0.0)):
                    return await self._receive()
            except TimeoutError:
                now = loop.time()
                if now >= self._deadline:
                    self.failure = BodyTimeout(
                        f"request body not received within {self._timeout_s:g} s", headers=CLOSE
                    )
                    raise self.failure from None
                self._check_rate(now)

    def _message_ready(self) -> bool:
        """uvicorn's receive would return at once: a message is waiting in its cycle."""
        event = getattr(self._server_cycle, "message_event", None)
        return event is not None and event.is_set()

    def data_waiting(self) -> bool | None:
        """Body bytes have reached the server and wait to be read (None: cannot tell)."""
        cycle = self._server_cycle
        try:
            return bool(cycle.body) or cycle.message_event.is_set() or not cycle.more_body
        except AttributeError:  # not uvicorn's cycle
            return None

    def evict(self, message: str) -> None:
        """Admission gave this request's place to another: 408 at its next wake-up."""
        self.failure = BodyTooSlow(message, headers=CLOSE)

    def _check_rate(self, now: float) -> None:
        elapsed = now - self.started
        rate = self._rate
        if rate.min_bytes_s <= 0 or elapsed <= rate.grace_s:
            return
        if self.received < rate.min_bytes_s * elapsed:
            self.failure = BodyTooSlow(
                f"request body arriving at {self.received / elapsed:.0f} bytes/s, under the "
                f"minimum of {rate.min_bytes_s:g} bytes/s (after {rate.grace_s:g} s)",
                headers=CLOSE,
            )
            raise self.failure

    async def send(self, message: Message) -> None:
        if self._swallow:
            return
        if message["type"] == "http.response.start":
            if self.failure is not None and message["status"] != self.failure.status_code:
                # Some library turned our exception into its own response (e.g. a generic 400):
                # answer with the real reason instead. When the app's own handlers already
                # answered it (with the right status, counted, in their route's error shape:
                # /v2 speaks the protocol's), their answer stands.
                self._swallow = True
                self.response_started = True
                self._on_error(self.failure)
                response = service_error_response(self.failure, self._request_id)
                await response({"type": "http"}, self._receive, self._send)
                return
            self.response_started = True
        await self._send(message)


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes`` without buffering them; 408 for uploads that trickle.

    A declared Content-Length over the limit is refused before reading a byte; otherwise the
    bytes are counted as they stream in and the request fails as soon as the count passes it.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        body_timeout_s: float,
        metrics: Metrics | None = None,
        rate: BodyRate | None = None,
    ) -> None:
        self.app = app
        self.rate = rate or BodyRate()
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            error = PayloadTooLarge(
                f"request body of {length} bytes is over the limit of {self.max_bytes} bytes",
                headers=CLOSE,
            )
            self._count(error)
            await service_error_response(error, request_id_of(scope))(scope, receive, send)
            return
        guard = _BodyGuard(
            receive,
            send,
            self.max_bytes,
            self.body_timeout_s,
            self._count,
            self.rate,
            request_id_of(scope),
            length,
        )
        scope[BODY_PROGRESS] = guard  # for admission control (service/pipeline/admission.py)
        try:
            await self.app(scope, guard.receive, guard.send)
        except (PayloadTooLarge, BodyTimeout) as exc:  # escaped the app unhandled
            if guard.response_started:
                raise
            self._count(exc)
            await service_error_response(exc, request_id_of(scope))(scope, receive, send)

    def _count(self, error: ServiceError) -> None:
        count(self.metrics, error.code)
