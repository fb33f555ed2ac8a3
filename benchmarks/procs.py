"""Starting a server as its own process, timing it to ready, watching its memory, stopping it.

Memory comes from /proc (Linux): the resident set of the process and its children, sampled
while the load runs, and each process's own high-water mark (VmHWM) read before it exits,
so a peak between two samples is not missed. Each page is counted once as far as /proc can
tell (``tree_memory_bytes``): a decode worker's pages shared with its forkserver are not counted
again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# The repository's root: the working directory ``-m benchmarks.*`` and ``-m model_export``
# children import from.
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(c) for c in task.read_text().split())
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _user_system_ticks(stat: Path) -> tuple[int, int]:
    # Fields after the command name (which may contain spaces): utime is 14th, stime 15th.
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its children so far."""
    total = 0
    for p in process_tree(pid):
        try:
            total += sum(_user_system_ticks(Path(f"/proc/{p}/stat")))
        except (OSError, IndexError, ValueError):
            continue
    return total / CLOCK_TICKS


def main_thread_cpu_ns(pid: int) -> int:
    """The process's main thread's time on a CPU so far (``schedstat``: nanoseconds, user and
    system together; ``stat``'s ticks are 10 ms)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0])


def main_thread_system_seconds(pid: int) -> float:
    """Of that, the time in the kernel (in ticks: coarse for short runs)."""
    return _user_system_ticks(Path(f"/proc/{pid}/task/{pid}/stat"))[1] / CLOCK_TICKS


def _shared_kb(pid: int) -> int:
    """The part of the process's resident set it shares with other processes now: its RSS less
    its proportional share of it (``Pss`` counts a page mapped by n processes as 1/n)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    pss = next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return max(0, _status_kb(pid, "VmRSS") - pss)


def tree_memory_bytes(pid: int, key: str = "VmRSS") -> int:
    """The process tree's resident memory now (``VmRSS``) or at its peak (``VmHWM``), each page
    once as far as /proc tells: the process's own figure, plus each descendant's less what that
    descendant shares with the others now. A summed ``VmHWM`` counts the pages the forked decode
    workers share with their forkserver once per process: after b0 phone c64, 538 MB summed, of
    which the two workers, the forkserver and the resource tracker 134 MB; 455 MB counted once.

    The top process is counted whole, its peak the kernel's: reading its proportional share walks
    its page tables (4.8 ms for 400 MB), too costly beside a benchmark. That is exact for the
    service, whose forkserver and resource tracker are fresh interpreters sharing only read-only
    files with it; a child forked from the top process itself would count its share twice."""
    top, *descendants = process_tree(pid)
    kb = _status_kb(top, key)
    kb += sum(max(0, _status_kb(p, key) - _shared_kb(p)) for p in descendants)
    return kb * 1024


@dataclass
class RssSampler:
    """Samples the process tree's resident memory in a background thread until stopped, each page
    once (``tree_memory_bytes``): the samples sum VmRSS of the processes there at the start, and
    what the descendants share is taken off once, at the end. Sampling costs the machine the
    benchmark measures, and only while the service is loaded: reading the descendants'
    ``smaps_rollup`` took 2.6 ms of CPU per sample of b0's tree, the resident sizes alone ~0.4 ms
    with the thread's wake-up (~0.1 ms here). Four samples a second keep that to 0.2 % of the
    two cores; the peak between samples is the kernel's (VmHWM, ``tree_memory_bytes``)."""

    pid: int
    interval_s: float = 0.25
    peak_bytes: int = 0
    _pids: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._pids = process_tree(self.pid)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        shared = sum(_shared_kb(p) for p in self._pids[1:]) * 1024
        self.peak_bytes = max(0, self.peak_bytes - shared)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, sum(map(_resident_bytes, self._pids)))


def _resident_bytes(pid: int) -> int:
    """VmRSS from ``statm`` (its second field, in pages): the cheapest read of it /proc has."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Server:
    """A server process started by the benchmark, with the time it took to become ready."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    ready_s: float
    log_path: Path

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start_server(
    name: str,
    argv: list[str],
    port: int,
    env: dict[str, str],
    log_path: Path,
    ready_path: str = "/readyz",
    timeout_s: float = 120.0,
) -> Server:
    """Start `argv` and poll `ready_path` until 200; `ready_s` runs from just before the
    process is spawned to the first 200, so it includes interpreter start and imports."""
    base_url = f"http://127.0.0.1:{port}"
    log = log_path.open("wb")
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = start + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} before ready; log:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            try:
                if client.get(base_url + ready_path).status_code == 200:
                    ready_s = time.perf_counter() - start
                    return Server(name, process, base_url, ready_s, log_path)
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    process.kill()
    raise RuntimeError(f"{name} not ready after {timeout_s} s; log: {log_path}")


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]
