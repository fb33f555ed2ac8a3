"""uvicorn's HTTP/1.1 protocol, hardened: what uvicorn 0.54 does not do on its own.

- **Header timeout** (slowloris): uvicorn has no header-read timeout, and the app's request
  timeout starts only once it reads the body, so a client trickling its headers held a
  connection forever. A timer armed when a connection opens (and after each response) closes it
  unless a request's headers are complete within ``header_timeout_s``.
- **Header limits**: uvicorn (httptools) buffers a header of any size (a 100 MB header line was
  read whole). The request line and headers together may take ``max_header_bytes`` and hold
  ``max_header_count`` fields; past either the answer is 431 and the connection closes. A
  chunked body's extensions and trailer fields are bounded the same way, together, by
  ``max_header_bytes`` (plus at most one 16 kB piece): a trailer field of tens of MiB was read
  whole, the parser concatenating it quadratically for seconds.
- **One request at a time per connection**: httptools parses every pipelined request in a read
  at once and uvicorn queues them all; a client that pipelines megabytes of requests and never
  reads made the server hold every parsed request and every unread answer. Bytes are fed to the
  parser only up to the end of the current request; what follows is kept raw (one read's worth,
  reading paused) until that request's answer is written and the client has taken it (the
  transport's write buffer has drained).
- **Requests per connection**: after ``max_requests_per_connection`` requests (nginx's
  ``keepalive_requests``, same default) the answer says ``Connection: close``. One-at-a-time
  bounds what a pipelined flood holds, not what it costs: every answer that fits in the
  client's socket buffers (megabytes on loopback) would be computed, and six connections never
  reading kept the event loop busy for 20 s, slowing honest uploads to 5–7 s.
- **Half-close**: a client may send its request and then shut down its write side
  (``shutdown(SHUT_WR)``); uvicorn closed the connection at that EOF, so the client never got
  its answer. The connection now stays open for writing until the answer is out.
- **Lingering close**: answering before the body is read (413 while streaming, 431, 408) with
  ``Connection: close`` made uvicorn close a socket with unread data, which sends a TCP RST
  that can reach the client before it has read the answer. Instead the answer goes out followed
  by a FIN (half-close), and the rest of the body is read and dropped (what nginx calls a
  lingering close): up to ``linger_bytes``, for at most ``linger_s``, closing sooner once the
  client is silent for ``LINGER_IDLE_S`` or closes itself. A client that sends its whole body
  before reading (Python's urllib, Java's HttpURLConnection) therefore sees the 413.
- **Quiet refusals**: uvicorn logs a warning per refused request ("Exceeded concurrency limit.",
  "Invalid HTTP request received."); a flood of them wrote one line each. Each distinct warning
  is logged at most once per ``LOG_EVERY_S``, with the count of those suppressed.
- **Host**: uvicorn takes an HTTP/1.1 request without a ``Host`` field, or with several; RFC
  9112 §3.2 says 400 for both, and a proxy in front may read another authority than we do.
- **Request id**: the answers written here (malformed requests get the service's JSON 400,
  not uvicorn's plain text), and uvicorn's own 503 past the connection limit, carry
  ``X-Request-ID`` like every other (service/request_id.py).
- **Exit 0 after a graceful SIGTERM**: see server.py.

uvicorn internals this relies on (pinned in pyproject.toml; keep this list short):
``HttpToolsProtocol`` and its ``parser``, ``cycle`` (``body``, ``more_body``, ``response_complete``,
``disconnected``, ``keep_alive``, ``message_event``), ``flow`` (``FlowControl``), ``logger``,
the methods ``data_received``, ``on_header``, ``on_headers_complete``, ``on_message_complete``,
``on_response_complete``, ``eof_received``, ``resume_writing``,
``_unset_keepalive_if_required``, ``handle_websocket_upgrade``, ``_start_asgi_task`` with
``flow_control.service_unavailable``; and ``Server.capture_signals`` with ``_captured_signals``.

``uvicorn service.app:app`` runs without these (docs/api.md says to put a proxy in front).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.edge.answers import json_answer
from service.edge.framing import ChunkedFraming
from service.edge.limits import CHUNKED_PIECE, HELD_BYTES, LINGER_IDLE_S, EdgeLimits
from service.edge.lingering import LingeringTransport
from service.edge.quiet_log import QuietLogger
from service.request_id import RequestIdMiddleware, new_request_id, request_id_from, request_id_of

# uvicorn's plain-text 503 past ``limit_concurrency``, with the request id.
_UNAVAILABLE = RequestIdMiddleware(service_unavailable)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request we refuse (431, 400)."""


class HardenedHTTPProtocol(HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools HTTP/1.1 protocol plus the limits in the module docstring."""

    limits = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = QuietLogger(self.logger)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.lingering = False
        self._linger_left = self.limits.linger_bytes
        self._linger_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._raw_transport = transport
        self._held = bytearray()  # raw bytes after the current request, not yet parsed
        self._eof = False  # the client has shut down its write side
        self._in_head = True  # parsing a request line + headers (not a body)
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes of the head so far (for a split "\r\n\r\n")
        self._header_count = 0
        self._body_left: int | None = None  # Content-Length still to come; None: chunked
        self._chunked = ChunkedFraming()
        self._refusal: bytes | None = None
        self._requests = 0  # requests begun on this connection
        super().connection_made(LingeringTransport(transport, self))
        self._arm(self.limits.header_timeout_s)

    # --- reading: one request at a time ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._discard(len(data))
            return
        self._unset_keepalive_if_required()
        if self._held or self._waiting():
            self._hold(data)
            return
        view = memoryview(data)
        used = self._feed(view)
        if used < len(view):
            self._hold(view[used:])

    def _waiting(self) -> bool:
        """The current request is complete; its answer is not yet written and taken."""
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete and not cycle.more_body
        return busy or self.flow.write_paused

    def _hold(self, data: bytes | memoryview) -> None:
        self._held += data
        if len(self._held) >= HELD_BYTES:
            self.flow.pause_reading()

    def _feed(self, data: memoryview) -> int:
        """Parse ``data`` up to the end of the request whose answer is pending; returns how many
        bytes were used, the rest to be held. Once refused or closing, all are used (dropped)."""
        view = data
        while view:
            if self._waiting():
                return len(data) - len(view)
            n = self._next_piece(view)
            if n is None:  # the head is over the limit: refused
                break
            piece, view = view[:n], view[n:]
            cycle = self.cycle
            framing = self._chunked if not self._in_head and self._body_left is None else None
            try:
                self.parser.feed_data(piece)
                if framing is self._chunked and framing is not None and not self._in_head:
                    self._count_framing(framing, len(piece))  # the body goes on: bound it
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                break
            except (httptools.HttpParserError, _Refused):
                if self._refusal is None:
                    self.logger.warning("Invalid HTTP request received.")
                    self._refusal = json_answer(
                        400, "bad_request", "Invalid HTTP request received.", self._refusal_id()
                    )
                self._refuse(self._refusal)
                break
            if self.cycle is not cycle:  # a new request's headers are complete
                self._disarm()
            if self._raw_transport.is_closing() or self.lingering:
                break
        return len(data)

    def _next_piece(self, view: memoryview) -> int | None:
        """How many bytes to give the parser now: never past the end of the current request."""
        if not self._in_head:
            if self._body_left is None:
                return min(len(view), CHUNKED_PIECE)
            return min(len(view), max(self._body_left, 1))
        budget = self.limits.max_header_bytes - self._head_bytes
        window = self._head_tail + bytes(view[: budget + 4])
        end = window.find(b"\r\n\r\n")
        if end >= 0:
            n = end + 4 - len(self._head_tail)
        elif len(view) <= budget:
            n = len(view)
        else:
            self._refuse_head()
            return None
        self._head_bytes += n
        self._head_tail = b"" if end >= 0 else window[-3:]
        return n

    def _refuse_head(self) -> None:
        limit = self.limits.max_header_bytes
        message = f"request line and headers over the limit of {limit} bytes in all"
        self._refuse(json_answer(431, "headers_too_large", message, self._refusal_id()))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._chunked = ChunkedFraming()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            message = f"more than {self.limits.max_header_count} request header fields"
            request_id = request_id_from(self.headers)  # among the fields parsed so far
            self._refusal = json_answer(431, "headers_too_large", message, request_id)
            raise _Refused(message)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._check_host()
        self._in_head = False
        self._body_left = 0
        for name, value in self.headers:
            if name == b"transfer-encoding":
                self._body_left = None
                break
            if name == b"content-length":
                self._body_left = int(value)  # httptools has checked it
        super().on_headers_complete()
        self._requests += 1
        if self._requests >= self.limits.max_requests_per_connection:
            # The answer says "Connection: close"; what the client sent after it is drained by
            # a lingering close, so that answer is not lost to a TCP reset.
            self.cycle.keep_alive = False

    def _check_host(self) -> None:
        """RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host field, and any request with
        more than one is refused (400); which authority would it mean?"""
        hosts = sum(1 for name, _ in self.headers if name == b"host")
        if hosts == 1 or (hosts == 0 and self.parser.get_http_version() != "1.1"):
            return
        message = "HTTP/1.1 request without a Host header" if hosts == 0 else "several Host headers"
        self._refusal = json_answer(400, "bad_request", message, request_id_from(self.headers))
        raise _Refused(message)

    def on_body(self, body: bytes) -> None:
        if self._body_left is not None:
            self._body_left -= len(body)
        else:
            self._chunked.body(len(body))
        # uvicorn appends each piece to a bytearray and hands the app bytes() of it: two copies of
        # every byte, 4 MB of memmove per 2 MB photo. A piece that finds the buffer empty is kept
        # as the parser's own bytes object instead (``b"" + piece`` and ``bytes(piece)`` are the
        # piece itself); one that finds an unread piece before it is appended to a bytearray.
        cycle = self.cycle
        if not cycle.body:
            cycle.body = b""
        elif isinstance(cycle.body, bytes):
            cycle.body = bytearray(cycle.body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunked.chunk_begins()

    def on_chunk_complete(self) -> None:
        self._chunked.chunk_ends()

    def _count_framing(self, framing: ChunkedFraming, fed: int) -> None:
        """After a piece of a chunked body: its chunk extensions and trailer fields, together,
        within the head's limit. They are metadata like the head; unbounded, one trailer field
        of tens of MiB kept the parser concatenating (quadratically) for seconds."""
        excess = framing.fed(fed)
        limit = self.limits.max_header_bytes
        if excess <= limit:
            return
        message = f"chunk extensions and trailer fields over the limit of {limit} bytes"
        self._refusal = json_answer(431, "headers_too_large", message, self._refusal_id())
        raise _Refused(message)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""
        super().on_message_complete()

    def _refusal_id(self) -> str:
        """The request id of an answer written here: the app's while it reads this request's
        body, else a new one (the head may not have been parsed at all)."""
        cycle = self.cycle
        if not self._in_head and cycle is not None and not cycle.response_complete:
            return request_id_of(cycle.scope)
        return new_request_id()

    def _refuse(self, answer: bytes) -> None:
        self._raw_transport.write(answer)
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            # Refused while the app reads the body: it sees the client gone and stops now,
            # and whatever it would answer is dropped (this answer is out).
            cycle.disconnected = True
            cycle.message_event.set()
        self.linger()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # Past the connection limit uvicorn answers with its own app, not ours: give that 503
        # its X-Request-ID too.
        if app is service_unavailable:
            app = _UNAVAILABLE
        super()._start_asgi_task(cycle, app)

    # --- after each answer -----------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()  # resumes reading
        if self._raw_transport.is_closing() or self.lingering:
            return
        if self._eof and not self._held:
            self._raw_transport.close()  # half-closed and answered: nothing more will come
            return
        self._arm(self.limits.header_timeout_s)
        if self._held:
            self.flow.pause_reading()
            # Not from inside the app's send(): the next request starts on the next loop turn.
            self.loop.call_soon(self._feed_held)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._held:
            self.loop.call_soon(self._feed_held)

    def _feed_held(self) -> None:
        if not self._held or self._waiting() or self.lingering or self._raw_transport.is_closing():
            return
        self._unset_keepalive_if_required()  # a request is coming: no keep-alive close
        self.flow.resume_reading()
        with memoryview(self._held) as view:
            used = self._feed(view)
        # Dropping a bytearray's head is O(1) in CPython: each pipelined request costs its own
        # bytes, not a copy of everything held behind it. (linger() may have replaced it.)
        del self._held[:used]
        if len(self._held) >= HELD_BYTES:
            self.flow.pause_reading()
        answering = self._busy() and not self.cycle.more_body
        if self._eof and not self._held and not answering:
            self._raw_transport.close()  # half-closed: no complete request is left to answer

    def _busy(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def eof_received(self) -> bool | None:
        """The client shut down its write side: answer what it sent, then close."""
        self._eof = True
        if self.lingering:
            return None
        complete = self._busy() and not self.cycle.more_body
        if complete or self._held:
            if not self._held:
                self.cycle.keep_alive = False  # close once this answer is written
            return True  # keep the transport open for writing
        return None  # idle, or a body that will never be complete: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # --- lingering close -------------------------------------------------------------------------

    def input_pending(self) -> bool:
        """Closing now would drop bytes the client sent (a body, pipelined requests)."""
        return self.body_incoming() or (bool(self._held) and not self._eof)

    def body_incoming(self) -> bool:
        """The client is still sending the current request's body."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.disconnected

    def linger(self) -> None:
        """The answer is out: send FIN, read and drop what still comes, within the bounds."""
        self.lingering = True
        self._held = bytearray()
        transport = self._raw_transport
        if self._eof or not transport.can_write_eof():  # nothing more will come, or TLS
            transport.close()
            return
        transport.write_eof()  # the answer, then FIN: the client reads it and stops sending
        self.flow.resume_reading()  # uvicorn paused reading when its body buffer filled
        self._linger_deadline = self.loop.time() + self.limits.linger_s
        self._arm(min(LINGER_IDLE_S, self.limits.linger_s))

    def _discard(self, size: int) -> None:
        self._linger_left -= size
        if self._linger_left < 0:
            self.flow.pause_reading()  # the byte budget is spent: the close timer ends it
            return
        left = self._linger_deadline - self.loop.time()
        self._arm(max(0.0, min(LINGER_IDLE_S, left)))

    # --- timers ----------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._raw_transport.close)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
