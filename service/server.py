"""Uvicorn, hardened for ``python -m service``: what uvicorn 0.54 does not do on its own.

- **Header timeout** (slowloris): uvicorn has no header-read timeout, and the app's request
  timeout starts only once it reads the body, so a client trickling its headers held a
  connection forever. A timer armed when a connection opens (and after each response) closes it
  unless a request's headers are complete within ``header_timeout_s``.
- **Lingering close**: answering before the body is read (413 while streaming, 503 at the door)
  with ``Connection: close`` made uvicorn close a socket with unread data, which sends a TCP RST
  that can reach the client before it has read the answer (asyncio clients, for one, then lose
  it). Instead the answer goes out followed by a FIN (half-close); up to ``LINGER_BYTES`` more
  of the body are read and dropped (the rest of an upload already in flight), then reading
  pauses; the socket closes when the client does, or after ``LINGER_S``. A client that keeps
  sending is throttled by TCP flow control meanwhile, and by then has had ``LINGER_S`` to read
  the answer (what nginx calls a lingering close).
- **Exit 0 after a graceful SIGTERM**: uvicorn re-raises the captured signal once it has drained,
  so the process died "by SIGTERM" (-15) even after a clean shutdown; process managers read 0
  as the clean stop it was.

``uvicorn service.app:app`` runs without these (docs/api.md says to put a proxy in front).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol  # httptools if installed, else h11

from .config import Settings

# The lingering close's bounds: bytes read and dropped after the answer, and time until closing.
# Reading no more than this keeps a refused client from pushing much past the refusal.
LINGER_BYTES = 256 * 1024
LINGER_S = 2.0
HEADER_TIMEOUT_S = 10.0  # or the request timeout, when that is shorter
KEEP_ALIVE_S = 5.0  # idle keep-alive connections close after this (uvicorn's default)


class _LingeringTransport:
    """The connection's transport; ``close()`` lingers while the request body is still coming."""

    def __init__(self, transport: asyncio.Transport, protocol: HardenedHTTPProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._protocol.lingering or not self._protocol.body_incoming():
            self._transport.close()
        elif self._transport.can_write_eof():
            self._protocol.linger(self._transport)
        else:  # TLS cannot half-close
            self._transport.close()


class HardenedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP/1.1 protocol plus a header timeout and a lingering close (module doc)."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.lingering = False
        self._linger_left = LINGER_BYTES
        self._timer: asyncio.TimerHandle | None = None
        self._raw_transport = transport
        super().connection_made(_LingeringTransport(transport, self))
        self._arm(self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the answer is out: drop the rest of the body, within the budget
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self.flow.pause_reading()  # the close timer ends it
            return
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a new request's headers are complete
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete  # no pipelined request running
        if idle and not self.transport.is_closing():
            self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def body_incoming(self) -> bool:
        """The client is still sending the current request's body."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.disconnected

    def linger(self, transport: asyncio.Transport) -> None:
        self.lingering = True
        transport.write_eof()  # the answer, then FIN: the client reads it and stops sending
        self.flow.resume_reading()  # uvicorn paused reading when its body buffer filled
        self._arm(LINGER_S)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._raw_transport.close)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def protocol_class(header_timeout_s: float) -> type[HardenedHTTPProtocol]:
    """uvicorn instantiates the protocol itself: bind the timeout in a subclass."""
    return type("HTTPProtocol", (HardenedHTTPProtocol,), {"header_timeout_s": header_timeout_s})


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The service's uvicorn settings (``options``: host, port, access_log, ...)."""
    options.setdefault("log_level", settings.log_level)
    return uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed (uvicorn[standard])
        # uvicorn's HTTP/1.1 protocol (httptools when installed) plus a header timeout and a
        # lingering close (module docstring).
        http=protocol_class(min(HEADER_TIMEOUT_S, settings.request_timeout_s)),
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
