"""The benchmarks' memory figure counts each page once: a forked worker's pages shared with its
forkserver are not counted again, and what the worker allocates itself is."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from benchmarks.procs import RssSampler, _status_kb, process_tree, tree_memory_bytes

MiB = 1 << 20

# The shape of the service's tree: a top process starts a fresh interpreter (as the decode
# workers' forkserver is started), which fills 64 MiB and forks a worker that fills 32 MiB of its
# own; all of them then wait.
FORKSERVER = """
import os, time
shared = b"\\x01" * (64 << 20)
if os.fork() == 0:
    own = b"\\x02" * (32 << 20)
    print("worker", flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""
TREE = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {FORKSERVER!r}])
time.sleep(60)
"""


def test_pages_a_worker_shares_with_its_forkserver_count_once() -> None:
    tree = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert tree.stdout is not None and tree.stdout.readline().strip() == "worker"
        pids = process_tree(tree.pid)
        assert len(pids) == 3
        summed = sum(_status_kb(p, "VmRSS") for p in pids) * 1024
        once = tree_memory_bytes(tree.pid)
        assert 64 * MiB + 32 * MiB <= once < 2 * 64 * MiB + 32 * MiB  # the worker's own counted
        assert summed - once > 50 * MiB  # the shared 64 MiB was in both summed figures
        assert tree_memory_bytes(tree.pid, "VmHWM") >= once
        with RssSampler(tree.pid, interval_s=0.05) as sampler:
            time.sleep(0.3)
        assert abs(sampler.peak_bytes - once) < 8 * MiB  # sampled, the same measure
    finally:
        for pid in reversed(process_tree(tree.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        tree.wait()
