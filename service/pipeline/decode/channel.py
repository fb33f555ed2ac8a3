"""What crosses between the server and one decode worker: the upload's bytes in, the model input
out, both through one shared-memory region; the pipe carries only small messages.

Why: through the pipe itself a 2 MB phone photo crosses the kernel in 64 kB pieces (a wake-up
of the worker each), and a 150 kB answer is pickled, copied twice more and unpickled; measured,
that is 0.3-0.5 ms of CPU per web photo and more per phone photo, on top of the decode
(BENCHMARKS.md, "Upload path"). Through the region each side copies once.

The region is an anonymous memory file (``memfd``), not a /dev/shm segment: a container's
/dev/shm is 64 MB by default, and running out of it there is a SIGBUS, not an error.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from service.config import MiB

# A worker's region keeps the pages of the largest upload it has seen; past this size they are
# handed back after the decode, so one huge upload does not stay resident for good.
KEEP_INPUT_BYTES = 8 * MiB
_LENGTH = struct.Struct("<Q")


@dataclass(frozen=True)
class RegionSize:
    input_bytes: int  # the largest upload (the body limit)
    output_bytes: int  # the model input: crop² × 3 bytes

    @property
    def total(self) -> int:
        return self.input_bytes + self.output_bytes


def _map(fd: int, size: RegionSize) -> mmap.mmap:
    region = mmap.mmap(fd, size.total)  # keeps its own duplicate of the descriptor
    os.close(fd)
    return region


class ServerEnd:
    """The server's side of one worker's channel. Used by one thread at a time (the one that
    holds the worker), so the region needs no lock."""

    def __init__(self, conn: Connection, size: RegionSize) -> None:
        self.conn, self.size = conn, size
        self._fd = os.memfd_create("efficientnet-decode", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size.total)
        self._region: mmap.mmap | None = None
        self._sent = 0  # bytes of the upload in the region

    def hand_over(self, worker_pid: int) -> None:
        """Give the started worker the region (over the pipe, as a descriptor)."""
        reduction.send_handle(self.conn, self._fd, worker_pid)
        self._region = _map(self._fd, self.size)

    def send(self, data: bytes) -> None:
        assert self._region is not None and len(data) <= self.size.input_bytes
        self._region[: len(data)] = data
        self._sent = len(data)
        self.conn.send_bytes(_LENGTH.pack(len(data)))

    def receive(self) -> tuple[str, Any]:
        """("ok", the model input, copied out) or ("error", (status, code, message))."""
        assert self._region is not None
        status, payload = self.conn.recv()
        if self._sent > KEEP_INPUT_BYTES:
            self._region.madvise(mmap.MADV_REMOVE, 0, self._sent - self._sent % mmap.PAGESIZE)
        if status != "ok":
            return status, payload
        shape = tuple(payload)
        out = np.frombuffer(self._region, np.uint8, int(np.prod(shape)), self.size.input_bytes)
        return "ok", out.reshape(shape).copy()


class WorkerEnd:
    """The worker's side: the upload's bytes out of the region, the model input into it."""

    def __init__(self, conn: Connection, size: RegionSize) -> None:
        self.conn, self.size = conn, size
        self._region = _map(reduction.recv_handle(conn), size)

    def receive(self) -> bytes:
        (length,) = _LENGTH.unpack(self.conn.recv_bytes())
        return self._region[:length]

    def send_ok(self, image: np.ndarray) -> None:
        assert image.nbytes <= self.size.output_bytes
        out = np.frombuffer(self._region, np.uint8, image.size, self.size.input_bytes)
        out.reshape(image.shape)[...] = image
        del out  # no export of the region may outlive this call
        self.conn.send(("ok", image.shape))

    def send_error(self, error: tuple[int, str, str]) -> None:
        self.conn.send(("error", error))
