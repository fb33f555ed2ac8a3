"""Every answer counted by route template and status, and timed."""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics


class RequestMetricsMiddleware:
    """Counts every response by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = frozenset(known_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = self._route_label(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_latency.labels(route).observe(time.perf_counter() - started)

    def _route_label(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if path is not None:
            return path
        # Refused before routing (e.g. 413 on Content-Length): still name known paths, but
        # never label by an arbitrary client path (unbounded cardinality).
        return scope["path"] if scope["path"] in self.known_paths else "other"
