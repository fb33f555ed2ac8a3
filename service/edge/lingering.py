"""The connection's transport as the protocol hands it to uvicorn: ``close()`` lingers while the
client is still sending (a body, pipelined requests), so an early answer (413, 431) reaches it
instead of a reset."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class Lingerer(Protocol):
    lingering: bool

    def input_pending(self) -> bool: ...

    def linger(self) -> None: ...


class LingeringTransport:
    def __init__(self, transport: asyncio.Transport, protocol: Lingerer) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._protocol.lingering or not self._protocol.input_pending():
            self._transport.close()
        else:
            self._protocol.linger()
