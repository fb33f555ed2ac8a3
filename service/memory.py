"""Fewer glibc malloc arenas: less resident memory held by a process with many threads.

glibc gives each thread that allocates its own arena (up to 8 × cores) and keeps freed memory in
it, so the preprocessing pool, the inference threads and onnxruntime's own threads each hold on to
the peak of what they once decoded or ran. Two arenas took b0's peak RSS under phone-size load
from 378 to 315 MB at the same throughput (BENCHMARKS.md). ``MALLOC_ARENA_MAX`` is read when the
process starts; ``mallopt(M_ARENA_MAX)`` does the same from inside, provided it runs before the
threads do (``python -m service`` calls it first thing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("service.memory")

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's arenas unless ``MALLOC_ARENA_MAX`` is set (then glibc already applied it).

    True when the cap was set here; False elsewhere than glibc (musl, macOS) or when the
    environment decides."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(M_ARENA_MAX, arenas) != 1:  # mallopt returns 1 on success
        log.warning("mallopt(M_ARENA_MAX, %d) failed; memory use may be higher", arenas)
        return False
    return True
