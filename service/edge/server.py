"""Uvicorn, hardened for ``python -m service``: the protocol of protocol.py with the settings'
limits, uvicorn's own connection limit and keep-alive, and a clean exit.

**Exit 0 after a graceful SIGTERM**: uvicorn re-raises the captured signal once it has drained,
so the process died "by SIGTERM" (-15) even after a clean shutdown; process managers read 0 as
the clean stop it was. This relies on uvicorn's ``Server.capture_signals`` and
``_captured_signals`` (pinned in pyproject.toml).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn

from service.config import Settings
from service.edge.access_log import log_config
from service.edge.limits import HEADER_TIMEOUT_S, KEEP_ALIVE_S, EdgeLimits
from service.edge.protocol import HardenedHTTPProtocol


def edge_limits(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        header_timeout_s=min(HEADER_TIMEOUT_S, settings.request_timeout_s),
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        max_requests_per_connection=settings.max_requests_per_connection,
        linger_s=settings.linger_s,
        linger_bytes=settings.linger_bytes,
    )


def protocol_class(limits: EdgeLimits) -> type[HardenedHTTPProtocol]:
    """uvicorn instantiates the protocol itself: bind the limits in a subclass."""
    return type("HTTPProtocol", (HardenedHTTPProtocol,), {"limits": limits})


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The service's uvicorn settings (``options``: host, port, access_log, ...)."""
    options.setdefault("log_level", settings.log_level)
    options.setdefault("log_config", log_config())  # the access log line names the request id
    return uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed (uvicorn[standard])
        # uvicorn's httptools HTTP/1.1 protocol plus the limits in the module docstring.
        http=protocol_class(edge_limits(settings)),
        # Connections + requests at once; past it uvicorn answers a plain-text 503. Bounds
        # sockets and buffers under a connection flood (slowloris); far above what admission
        # control lets into the pipeline, so ordinary overload gets the JSON 503 + Retry-After.
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=KEEP_ALIVE_S,
        **options,
    )


class Server(uvicorn.Server):
    """Exit 0, not -SIGTERM, once a signal's graceful shutdown has completed (module doc)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                # uvicorn re-raises these after restoring the handlers; the drain is done.
                self._captured_signals.clear()
