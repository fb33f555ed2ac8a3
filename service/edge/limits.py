"""The limits the HTTP edge holds every connection to (protocol.py): the settable ones in
``EdgeLimits`` (server.py fills them from Settings), and the fixed ones."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_TIMEOUT_S = 10.0  # or the request timeout, when that is shorter
KEEP_ALIVE_S = 5.0  # idle keep-alive connections close after this (uvicorn's default)
LINGER_IDLE_S = 2.0  # a lingering connection closes once the client is silent this long
# Raw bytes kept after a complete request while its answer is pending: past it, reading pauses
# and TCP flow control holds the client back.
HELD_BYTES = 64 * 1024
CHUNKED_PIECE = 16 * 1024  # chunked bodies are fed in pieces: their end is found by the parser


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout_s: float = HEADER_TIMEOUT_S
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    max_requests_per_connection: int = 1000
    linger_s: float = 10.0
    linger_bytes: int = 64 * 1024 * 1024
