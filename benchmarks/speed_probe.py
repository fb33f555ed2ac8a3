"""How fast this machine ran while a benchmark ran: a process of its own times a fixed piece of
pure Python once a second, in CPU time, and the run records the spread.

On a quiet machine with cores of its own the figure barely moves. On the 2-core AMD EPYC VM of
BENCHMARKS.md it switched between ~30 and ~60 µs for seconds at a time, on either core, with
nothing of ours running: two measurements a minute apart could differ by that much whatever they
measured. The spread says how far a run's ratios can be trusted.

    python -m benchmarks.speed_probe   # prints one sample (µs) a second until stopped
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from benchmarks.procs import ROOT

# Each sample is the median of this many timings of the piece (~30 µs each on the AMD VM):
# ~1 ms of CPU a second, 0.1 % of a core.
TIMINGS_PER_SAMPLE = 25
INTERVAL_S = 1.0
# A sample this many times the run's p10 counts as a slow second.
SLOW = 1.5


def piece_us() -> float:
    """The median CPU time of the fixed piece of Python, in µs."""
    timings = []
    for _ in range(TIMINGS_PER_SAMPLE):
        started = time.thread_time_ns()
        sum(range(2000))
        timings.append(time.thread_time_ns() - started)
    return statistics.median(timings) / 1e3


@dataclass
class SpeedProbe:
    """``with SpeedProbe() as probe:`` samples during the block; ``probe.summary()`` after."""

    samples_us: list[float] = field(default_factory=list)
    process: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> SpeedProbe:
        command = [sys.executable, "-m", "benchmarks.speed_probe"]
        # From the repository's root, where ``benchmarks`` is importable, whatever the caller's
        # working directory.
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        # Killed, not asked: a SIGTERM the caller ignores is ignored by the child too, and each
        # sample is already flushed, so nothing is lost.
        self.process.kill()
        out, _ = self.process.communicate()
        self.samples_us = [float(line) for line in out.split()]

    def summary(self) -> dict[str, str]:
        """p10 / median / p90 of the samples, in µs, and the share of them at ``SLOW`` × the
        p10 or more (the machine's slow seconds); empty when there were too few."""
        if len(self.samples_us) < 2:
            return {}
        # Inclusive: the deciles stay within the samples however few there are.
        p10, *_, p90 = statistics.quantiles(self.samples_us, n=10, method="inclusive")
        median = statistics.median(self.samples_us)
        slow = sum(sample >= SLOW * p10 for sample in self.samples_us) / len(self.samples_us)
        return {
            "python_piece_us": f"{p10:.0f} / {median:.0f} / {p90:.0f}",
            "python_piece_samples": str(len(self.samples_us)),
            "python_piece_slow_share": f"{slow:.0%}",
        }


def main() -> int:
    try:
        while True:
            print(f"{piece_us():.1f}", flush=True)
            time.sleep(INTERVAL_S)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
