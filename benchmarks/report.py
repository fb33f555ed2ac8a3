"""The targets of issue 7, checked against one run's figures, and the markdown report."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CONCURRENCY_LEVELS: tuple[int, ...] = (1, 4, 16, 64)
HEADLINE_CONCURRENCY = 16

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Target:
    variant: str
    name: str
    value: float | None  # None: the figure could not be measured, which fails the target
    op: str
    limit: float
    unit: str = ""

    @property
    def passed(self) -> bool:
        return self.value is not None and _OPS[self.op](self.value, self.limit)

    def row(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.3g}{self.unit}"
        verdict = "PASS" if self.passed else "FAIL"
        limit = f"{self.op} {self.limit:g}{self.unit}"
        return f"| {self.variant} | {self.name} | {shown} | {limit} | {verdict} |"


@dataclass
class ServerResult:
    name: str
    ready_s: float
    peak_rss_mb: float
    levels: dict[int, dict[str, Any]] = field(default_factory=dict)

    def throughput(self, concurrency: int) -> float | None:
        level = self.levels.get(concurrency)
        return float(level["throughput"]) if level and level.get("count") else None


@dataclass
class VariantResult:
    variant: str
    weights: str
    inprocess: dict[str, dict[str, Any]]  # sequential / pipelined / ort_batch1: RunStats dicts
    decode_ms: dict[str, float]  # "640x480" / "4032x3024": median decode + preprocess
    service: ServerResult | None = None
    torch: ServerResult | None = None

    @property
    def limit_throughput(self) -> float:
        """The in-process pipeline at its best (sequential or overlapped)."""
        return max(
            self.inprocess["sequential"]["throughput"], self.inprocess["pipelined"]["throughput"]
        )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def evaluate(result: VariantResult, strict_resources: bool) -> list[Target]:
    """Every target for one variant. Start-up and memory targets are stated for b0; for other
    variants they are reported against the same limits when `strict_resources`."""
    v = result.variant
    svc, torch = result.service, result.torch
    c = HEADLINE_CONCURRENCY
    svc_c16 = svc.throughput(c) if svc else None
    targets = [
        Target(
            v,
            f"service c{c} / in-process pipeline",
            _ratio(svc_c16, result.limit_throughput),
            ">=",
            0.85,
        ),
        Target(
            v,
            f"service c{c} / ORT alone batch 1",
            _ratio(svc_c16, result.inprocess["ort_batch1"]["throughput"]),
            ">=",
            0.8,
        ),
    ]
    if svc and torch:
        targets.append(
            Target(
                v, f"service / torch eager at c{c}", _ratio(svc_c16, torch.throughput(c)), ">=", 4.0
            )
        )
        targets += [
            Target(
                v,
                f"service / torch eager at c{level}",
                _ratio(svc.throughput(level), torch.throughput(level)),
                ">",
                1.0,
            )
            for level in CONCURRENCY_LEVELS
            if level != c
        ]
    if svc and 1 in svc.levels and svc.levels[1].get("count"):
        single_ms = result.inprocess["sequential"]["p50_ms"]
        targets.append(
            Target(
                v,
                "p50 at c1 (ms) vs 1.1 x in-process + 2",
                svc.levels[1]["p50_ms"],
                "<=",
                1.1 * single_ms + 2.0,
                " ms",
            )
        )
    if strict_resources and svc:
        targets.append(Target(v, "start to /readyz 200", svc.ready_s, "<=", 3.0, " s"))
        targets.append(Target(v, "peak RSS under load", svc.peak_rss_mb, "<=", 400.0, " MB"))
    targets.append(
        Target(
            v,
            "4032x3024 JPEG decode + preprocess",
            result.decode_ms.get("4032x3024"),
            "<=",
            25.0,
            " ms",
        )
    )
    return targets


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def figures_table(result: VariantResult) -> str:
    limit = result.limit_throughput
    torch = result.torch
    lines = [
        f"#### {result.variant} ({result.weights} weights)",
        "",
        "| measurement | images/s | p50 ms | p95 ms | p99 ms | / in-process | / torch | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (
        ("sequential", "in-process: decode + preprocess + ORT, one at a time"),
        ("pipelined", "in-process: preprocess pool overlapped with ORT"),
        ("ort_batch1", "ORT alone, preprocessed tensors, batch 1"),
    ):
        s = result.inprocess[key]
        lines.append(
            f"| {label} | {s['throughput']:.1f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | "
            f"{s['p99_ms']:.1f} | {s['throughput'] / limit:.2f} | | 0 |"
        )
    for server in (result.service, result.torch):
        if server is None:
            continue
        for level, s in sorted(server.levels.items()):
            tput = float(s.get("throughput", 0.0))
            vs_torch = ""
            if server is result.service and torch and torch.throughput(level):
                vs_torch = f"{tput / torch.throughput(level):.2f}"  # type: ignore[operator]
            lines.append(
                f"| {server.name} HTTP c{level} | {tput:.1f} | {_fmt(s.get('p50_ms'))} | "
                f"{_fmt(s.get('p95_ms'))} | {_fmt(s.get('p99_ms'))} | {tput / limit:.2f} | "
                f"{vs_torch} | {s.get('errors', 0)} |"
            )
    lines.append("")
    for server in (result.service, result.torch):
        if server is not None:
            lines.append(
                f"- {server.name}: start to ready {server.ready_s:.2f} s, "
                f"peak RSS under load {server.peak_rss_mb:.0f} MB"
            )
    decode = ", ".join(f"{size}: {ms:.1f} ms" for size, ms in result.decode_ms.items())
    lines.append(f"- decode + preprocess (service code, median): {decode}")
    return "\n".join(lines)


def targets_table(targets: list[Target]) -> str:
    lines = ["| variant | target | measured | limit | result |", "|---|---|---:|---:|---|"]
    lines += [t.row() for t in targets]
    return "\n".join(lines)
