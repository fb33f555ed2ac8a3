"""A chunked request body's framing, counted: what is neither chunk data nor the least framing
that data needs, so that protocol.py can bound chunk extensions and trailer fields."""

from __future__ import annotations


class ChunkedFraming:
    """How many bytes of a chunked body are neither its data nor the least framing that data
    needs (a hex size line and two CRLFs per chunk): chunk extensions, trailer fields, padding."""

    def __init__(self) -> None:
        self.wire = 0  # bytes of the body fed to the parser
        self.data = 0  # of which chunk data
        self.needed = 0  # the least framing of the chunks completed
        self.current: int | None = None  # data bytes of the chunk in progress

    def chunk_begins(self) -> None:
        self.current = 0

    def body(self, size: int) -> None:
        self.data += size
        if self.current is not None:
            self.current += size

    def chunk_ends(self) -> None:
        self.needed += len(f"{self.current or 0:x}") + 4
        self.current = None

    def fed(self, size: int) -> int:
        """Count ``size`` more bytes fed; the excess so far."""
        self.wire += size
        in_progress = 0 if self.current is None else len(f"{self.current:x}") + 2
        return self.wire - self.data - self.needed - in_progress
