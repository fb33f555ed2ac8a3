"""Latency and throughput summaries shared by every measurement."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RunStats:
    """One measured run: `count` successful items over `duration_s` of wall time."""

    count: int
    errors: int
    duration_s: float
    throughput: float  # items per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    # CPU time (all threads) spent per item: on a shared machine it moves much less than
    # wall-clock throughput, so it tells where the cores went even when the run was noisy.
    cpu_ms_per_item: float | None = None

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(
    latencies_s: list[float], duration_s: float, errors: int = 0, cpu_s: float | None = None
) -> RunStats:
    """Percentiles of per-item latencies and throughput over the whole window."""
    if not latencies_s:
        raise ValueError("no successful measurements: nothing to summarize")
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return RunStats(
        count=len(latencies_s),
        errors=errors,
        duration_s=duration_s,
        throughput=len(latencies_s) / duration_s,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(ms.mean()),
        cpu_ms_per_item=None if cpu_s is None else 1000.0 * cpu_s / len(latencies_s),
    )
