"""Decoding that can be stopped: worker processes under a time and an address-space limit.

Why processes: a Pillow decode cannot be interrupted. A thread kept decoding a progressive JPEG
of thousands of scans for 27 s after its request had timed out, both cores went to two such
files, and SIGTERM waited for them. A worker process can be killed at its deadline, its address
space can be capped (RLIMIT_AS) so an image's memory cannot take the server down, and a decoder
crash ends the worker, not the server.

The path of an upload (decoder.py drives it, in one trip to a decode thread):

1. ``plan_decode`` (checks.py) reads the header and the file's structure in a
   thread of the server: refusals that need no pixels (413 pixel limit, 422 too many scans)
   cost no worker, and the plan says how much memory the decode will hold and whether it is
   expensive (cost.py: over ~0.5 s).
2. ``DecodeBudget`` (budget.py) reserves that memory out of EFFICIENTNET_DECODE_MEMORY_MB
   before the decode starts: two big images wait for each other instead of doubling the peak
   (a small one may pass a waiting big one, until that has waited a second); one bigger than
   the whole budget gets 413 at once. An expensive upload first takes a slot of the expensive
   lane: expensive decodes hold every worker but one, so cheap uploads always have one.
3. A quick upload (a small baseline JPEG, cost.py) decodes in the decode thread itself. For
   any other, ``DecodePool`` hands the bytes to an idle worker, which decodes, converts and
   crops them and answers with the model's small uint8 input (150 kB at 224², never the
   decoded image); both cross through the worker's shared-memory region (channel.py). Past
   EFFICIENTNET_DECODE_TIMEOUT_S the worker is killed and replaced, and the request gets 422.

The workers are forked from a ``forkserver`` that has imported only this module (Pillow, NumPy):
no onnxruntime session, no event loop and none of the server's threads are copied into them, and
a replacement starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import resource
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from model_contract import Preprocessing
from service.config import MiB
from service.errors import (
    DecodeFailed,
    DecodeTooExpensive,
    ImageTooLarge,
    NotReady,
    PayloadTooLarge,
    ServiceError,
)
from service.pipeline.decode.channel import RegionSize, ServerEnd, WorkerEnd
from service.pipeline.decode.image import configure_pillow, preprocess

log = logging.getLogger("service.decoding")

# A worker's address space may grow this much past the decode budget: Python's own allocations,
# zlib's windows, the conversion strips and the resize's buffers. Past it, allocations fail and
# the request gets 413; the bound is on every worker, whatever the estimate said.
WORKER_SLACK_BYTES = 256 * MiB
# On SIGTERM uvicorn lets requests in progress finish. Decodes running or queued then have this
# long after the signal, all together: a queue of a few dozen photos decodes within it even on a
# slow 2-core machine (40 1800x1200 PNGs queued at once took 2.0-2.5 s there), so the drain
# completes; a slower decode is cut (503, retry elsewhere) rather than holding the exit for up
# to EFFICIENTNET_DECODE_TIMEOUT_S.
SHUTDOWN_DECODE_S = 5.0
# How often a waiting thread looks whether a shutdown has shortened its deadline.
_WAIT_SLICE_S = 0.25


@dataclass(frozen=True)
class DecodeLimits:
    workers: int  # decodes at once
    timeout_s: float  # per decode, in its worker
    memory_bytes: int  # all decodes in progress together, as estimated from their headers
    max_pixels: int
    max_input_bytes: int = 64 * MiB  # the largest upload handed to a worker (the body limit)

    def region(self, spec: Preprocessing) -> RegionSize:
        return RegionSize(self.max_input_bytes, spec.crop_size * spec.crop_size * 3)


# --- In the worker process --------------------------------------------------------------------


def _address_space_bytes() -> int | None:
    """What this process maps now (Linux); None where /proc does not say (macOS)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return None


def _worker_main(conn: Connection, spec: Preprocessing, limits: DecodeLimits) -> None:
    # Ctrl-C reaches the whole process group: the server decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_pillow(limits.max_pixels)
    channel = WorkerEnd(conn, limits.region(spec))
    # What this process maps already (interpreter, libraries, the channel's region) plus what
    # one decode may take.
    mapped = _address_space_bytes()
    if mapped is not None:
        cap = mapped + limits.memory_bytes + WORKER_SLACK_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    while True:
        try:
            data = channel.receive()
        except (EOFError, OSError):  # the server closed its end, or is gone
            return
        try:
            image = preprocess(data, spec, limits.max_pixels)
        except ServiceError as exc:  # plain values cross the pipe
            channel.send_error((exc.status_code, exc.code, exc.message))
        except MemoryError:
            message = "image too large to decode within the memory limit"
            channel.send_error((ImageTooLarge.status_code, ImageTooLarge.code, message))
        else:
            channel.send_ok(image)


# --- In the server ------------------------------------------------------------------------------


class _Worker:
    def __init__(self, ctx: Any, spec: Preprocessing, limits: DecodeLimits) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, spec, limits), name="decode", daemon=True
        )
        self.process.start()
        child.close()
        self.channel = ServerEnd(self.conn, limits.region(spec))
        assert self.process.pid is not None
        self.channel.hand_over(self.process.pid)
        # ``close`` (shutdown) and the thread whose exchange it broke both kill the worker: the
        # pipe's descriptor must be closed once, or the second close may hit a reused number.
        self._kill_lock = threading.Lock()

    def kill(self) -> None:
        with self._kill_lock:
            if self.conn.closed:
                return
            self.process.kill()
            self.process.join()
            self.conn.close()


class DecodePool:
    """Worker processes, one decode each at a time; ``run`` is called from threads."""

    def __init__(self, spec: Preprocessing, limits: DecodeLimits) -> None:
        self._spec, self._limits = spec, limits
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([__name__])
        self._lock = threading.Lock()
        self._closed = False
        self._shutdown_at: float | None = None
        self._workers: set[_Worker] = set()
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for _ in range(limits.workers):
            self._idle.put(self._spawn())

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers if w.process.pid is not None]

    def _spawn(self) -> _Worker:
        worker = _Worker(self._ctx, self._spec, self._limits)
        with self._lock:
            self._workers.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        with self._lock:
            self._workers.discard(worker)
            if self._closed:
                return worker
        return self._spawn()

    def all_alive(self) -> bool:
        """Whether every worker process is running (a few waitpid calls: cheap on the loop)."""
        with self._lock:
            workers = list(self._workers)
        return all(w.process.is_alive() for w in workers)

    def revive(self) -> bool:
        """Replace the idle workers that died (the OOM killer, a signal) now, not at the next
        upload; False if one could not be started. Busy ones are the uploads' business."""
        held: list[_Worker] = []
        with contextlib.suppress(queue.Empty):
            while len(held) < self._limits.workers:
                held.append(self._idle.get_nowait())
        try:
            for i, worker in enumerate(held):
                if not worker.process.is_alive():
                    log.warning("decode worker %s died idle: replaced", worker.process.pid)
                    held[i] = self._replace(worker)
        except OSError as exc:  # fork failed: out of memory or processes
            log.error("cannot start a decode worker: %s", exc)
            return False
        finally:
            for worker in held:
                self._idle.put(worker)
        return True

    def run(self, data: bytes) -> np.ndarray:
        """Decode ``data`` in a worker: the model input, or the ServiceError it raised."""
        if len(data) > self._limits.max_input_bytes:
            raise PayloadTooLarge(
                f"upload of {len(data)} bytes is over the limit of "
                f"{self._limits.max_input_bytes} bytes"
            )
        worker = self._idle.get()  # as many calling threads as workers: one is idle
        if self._past_drain_deadline():  # a decode begun now would be cut at once, its worker
            self._idle.put(worker)  # killed and forked again: refuse before sending anything
            raise NotReady("the service is shutting down")
        if not worker.process.is_alive():  # died idle (OOM killer, a signal): not this upload
            worker = self._replace(worker)
        try:
            status, payload = self._exchange(worker, data)
        except BaseException:
            worker = self._replace(worker)
            raise
        finally:
            self._idle.put(worker)
        if status == "ok":
            return payload
        status_code, code, message = payload
        raise ServiceError(message, status_code=status_code, code=code)

    def _deadline(self, started: float) -> tuple[float, bool]:
        """When the decode begun at ``started`` must end, and whether a shutdown set it."""
        deadline = started + self._limits.timeout_s
        if self._shutdown_at is None:
            return deadline, False
        # One drain deadline for every decode, begun or queued: a queue of slow images must not
        # stretch the exit to SHUTDOWN_DECODE_S each.
        cut = self._shutdown_at + SHUTDOWN_DECODE_S
        return min(deadline, cut), cut < deadline

    def _await_answer(self, worker: _Worker) -> None:
        """Until the worker answers (or dies); past the deadline it is killed and we raise."""
        started = time.monotonic()
        while True:
            deadline, by_shutdown = self._deadline(started)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if worker.conn.poll(min(left, _WAIT_SLICE_S)):
                return
        if by_shutdown:
            raise NotReady("the service is shutting down")
        timeout = self._limits.timeout_s
        log.warning("decode took over %g s: worker %s killed", timeout, worker.process.pid)
        raise DecodeTooExpensive(f"decoding this image took over {timeout:g} s")

    def _exchange(self, worker: _Worker, data: bytes) -> tuple[str, Any]:
        try:
            worker.channel.send(data)
            self._await_answer(worker)
            return worker.channel.receive()
        except (EOFError, OSError):
            if self._closed:
                raise NotReady("the service is shutting down") from None
            code = worker.process.exitcode if worker.process.exitcode is not None else "?"
            log.warning("decode worker %s died (exit %s)", worker.process.pid, code)
            raise DecodeFailed("the decoder failed on this image") from None

    def begin_shutdown(self) -> None:
        self._shutdown_at = time.monotonic()

    def _past_drain_deadline(self) -> bool:
        shutdown_at = self._shutdown_at
        return shutdown_at is not None and time.monotonic() >= shutdown_at + SHUTDOWN_DECODE_S

    def close(self) -> None:
        """Kill every worker now, busy or not: a decode in progress must not hold up an exit."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
        for worker in workers:
            worker.kill()
