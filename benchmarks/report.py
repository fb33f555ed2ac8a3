"""The benchmark targets, checked against one run's figures, and the markdown report."""

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
        limit = f"{self.op} {self.limit:.3g}{self.unit}"
        return f"| {self.variant} | {self.name} | {shown} | {limit} | {verdict} |"


@dataclass
class ServerResult:
    name: str
    ready_s: float
    peak_rss_mb: float
    levels: dict[int, dict[str, Any]] = field(default_factory=dict)  # web-size photos
    phone: dict[str, Any] | None = None  # concurrency 16 on phone-size photos

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
    settings: dict[str, Any] = field(default_factory=dict)  # the service's, as resolved

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
            for level in sorted(svc.levels)
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


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


HEADER = (
    "| measurement | images/s | p50 ms | p95 ms | p99 ms | CPU ms/img (client) "
    "| RSS MB | / in-process | / torch | errors |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
INPROCESS_ROWS = (
    ("sequential", "in-process: decode + preprocess + ORT, one at a time"),
    ("pipelined", "in-process: preprocess pool overlapped with ORT runs, the service's shape"),
    ("ort_batch1", "ORT alone, preprocessed tensors, batch 1"),
    ("pipelined_phone", "in-process pipeline, phone JPEGs"),
)


def figures_table(result: VariantResult) -> str:
    """One row per measurement; '/ in-process' is against the in-process pipeline on the
    same photos (web for the web rows, phone for the phone rows)."""
    limit = result.limit_throughput
    lines = [f"#### {result.variant} ({result.weights} weights)", "", HEADER]
    for key, label in INPROCESS_ROWS:
        s = result.inprocess[key]
        phone = result.inprocess["pipelined_phone"]["throughput"]
        ref_tput = phone if key.endswith("phone") else limit
        cells = [label, f"{s['throughput']:.1f}", f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}"]
        cells += [f"{s['p99_ms']:.1f}", fmt(s.get("cpu_ms_per_item"))]
        cells += ["", f"{s['throughput'] / ref_tput:.2f}", "", "0"]
        lines.append("| " + " | ".join(cells) + " |")
    for server in (result.service, result.torch):
        if server is not None:
            lines += _server_rows(server, result)
    lines.append("")
    for server in (result.service, result.torch):
        if server is not None:
            lines.append(
                f"- {server.name}: start to ready {server.ready_s:.2f} s, "
                f"peak RSS under load {server.peak_rss_mb:.0f} MB"
            )
    decode = ", ".join(f"{size}: {ms:.1f} ms" for size, ms in result.decode_ms.items())
    lines.append(f"- decode + preprocess (service code, median): {decode}")
    if result.settings:
        shown = ", ".join(f"{k} {v}" for k, v in result.settings.items())
        lines.append(f"- service settings (both in-process and HTTP): {shown}")
    return "\n".join(lines)


def _server_rows(server: ServerResult, result: VariantResult) -> list[str]:
    torch = result.torch if server is result.service else None
    rows = [
        (f"c{level}", s, result.limit_throughput, torch.levels.get(level) if torch else None)
        for level, s in sorted(server.levels.items())
    ]
    if server.phone:
        phone_limit = result.inprocess["pipelined_phone"]["throughput"]
        rows.append(("c16 phone JPEGs", server.phone, phone_limit, torch.phone if torch else None))
    return [_server_row(server.name, *row) for row in rows]


def _server_row(
    name: str, label: str, s: dict[str, Any], limit: float, torch: dict[str, Any] | None
) -> str:
    tput = float(s.get("throughput", 0.0))
    vs_torch = ""
    if torch and torch.get("throughput"):
        vs_torch = f"{tput / float(torch['throughput']):.2f}"
    cpu = f"{fmt(s.get('server_cpu_ms_per_request'))} ({fmt(s.get('cpu_ms_per_item'))})"
    cells = [f"{name} HTTP {label}", f"{tput:.1f}", fmt(s.get("p50_ms")), fmt(s.get("p95_ms"))]
    cells += [fmt(s.get("p99_ms")), cpu, fmt(s.get("rss_mb_during"), 0)]
    cells += [f"{tput / limit:.2f}", vs_torch, str(s.get("errors", 0))]
    return "| " + " | ".join(cells) + " |"


def targets_table(targets: list[Target]) -> str:
    lines = ["| variant | target | measured | limit | result |", "|---|---|---:|---:|---|"]
    lines += [t.row() for t in targets]
    return "\n".join(lines)
