"""onnxruntime's CPU memory options, in-process: RSS and images/s of two threads running
batches of 1 and 2 alternately on one session (the service's CPU shape), one mode per process.

    python -m benchmarks.ort_memory [--variant b0] [--rounds 2]

Modes: default (the service's session: CPU arena on, memory pattern on), noarena
(``enable_cpu_mem_arena = False``), nopattern (``enable_mem_pattern = False``), both off, and
sameasreq (a shared CPU arena with ``arena_extend_strategy`` kSameAsRequested, registered with
``create_and_register_allocator`` and used through ``session.use_env_allocators``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.models import DEFAULT_WEIGHTS, ensure_model

MODES = ("default", "noarena", "nopattern", "noarena_nopattern", "sameasreq")
RUNS_PER_THREAD = 60


def _options(mode: str) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = "noarena" not in mode
    options.enable_mem_pattern = "nopattern" not in mode
    if mode == "sameasreq":
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                   ort.OrtMemType.DEFAULT)  # fmt: skip
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def _rss_mb(key: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) // 1024


def measure(mode: str, model: str) -> str:
    session = ort.InferenceSession(model, _options(mode), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8) for n in (1, 2)]
    for x in inputs:
        session.run(None, {"image": x})
    warm = _rss_mb("VmRSS")
    images = [0, 0]

    def work(slot: int) -> None:
        for i in range(RUNS_PER_THREAD):
            session.run(None, {"image": inputs[i % 2]})
            images[slot] += 1 + i % 2

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(slot,)) for slot in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(images) / (time.perf_counter() - started)
    after, peak = _rss_mb("VmRSS"), _rss_mb("VmHWM")
    return f"| {mode} | {rate:.1f} | {warm} | {after} | {peak} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child process
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        print(measure(args.mode, args.model), flush=True)
        return 0
    model = ensure_model(args.variant, DEFAULT_WEIGHTS.get(args.variant, "random"),
                         Path("artifacts/bench-models"))  # fmt: skip
    print("| mode | images/s | RSS MB after warm-up | RSS MB after | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for _ in range(args.rounds):
        for mode in MODES:  # each in a fresh process: RSS is per process
            argv = [sys.executable, "-m", "benchmarks.ort_memory", "--mode", mode]
            subprocess.run([*argv, "--model", str(model)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
