"""The peer benchmark's targets and its markdown report."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import Paired, Target, rounds_of
from benchmarks.report import fmt as _f

REFERENCE = {"jpeg": "service", "uint8": "service /v2 uint8 tensors"}
WIN_LEVELS = (16, 64)  # ahead of every peer here, on the web photos
# At c1, "not behind": a p50 within 10 % of the fastest peer's, and images/s within 10 % of each
# peer's (one request at a time leaves nothing to batch or overlap: a tie is the honest outcome).
C1_SLACK = 1.10


@dataclass
class Measured:
    """One endpoint's figures: the best round per load, and every round."""

    name: str
    server: str
    kind: str  # "jpeg" | "uint8"
    ready_s: float
    best: dict[str, dict[str, Any]]  # "web c16" / "phone c16" → loadgen figures
    rounds: list[dict[str, dict[str, Any]]]
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ours(self) -> bool:
        """Our endpoints (the references and the stand-ins) are never a peer to beat."""
        return self.server == "service"

    @property
    def is_reference(self) -> bool:
        return self.name in REFERENCE.values()

    def tput(self, key: str) -> float | None:
        f = self.best.get(key)
        return float(f["throughput"]) if f and f.get("count") else None

    def p50(self, key: str) -> float | None:
        f = self.best.get(key)
        return float(f["p50_ms"]) if f and f.get("count") else None

    @property
    def peak_rss_mb(self) -> float:
        return max(f.get("peak_rss_mb", 0.0) for r in self.rounds for f in r.values())

    def top1(self) -> dict[str, str]:
        """Photo (file stem: chelsea_640x480) → top-1 label, over every load."""
        out: dict[str, str] = {}
        for f in self.best.values():
            for name, label in f.get("top1", {}).items():
                out.setdefault(Path(name).stem, label)
        return out


def _reference(measured: list[Measured], kind: str) -> Measured | None:
    return next((m for m in measured if m.name == REFERENCE[kind]), None)


def targets(variant: str, measured: list[Measured]) -> list[Target]:
    """Ahead of every peer at c16 and c64 (web), and not behind at c1 (C1_SLACK), each peer
    compared with our endpoint of its kind (JPEG uploads with /classify, client-preprocessed
    tensors with /v2 uint8), round by round (report.Paired)."""
    out = []
    for kind in ("jpeg", "uint8"):
        ours = _reference(measured, kind)
        peers = [m for m in measured if m.kind == kind and not m.is_ours]
        if ours is None or not peers:
            continue
        for peer in peers:
            for level in WIN_LEVELS:
                key = f"web c{level}"
                if key in ours.best:
                    out.append(_paired(variant, f"{ours.name} / {peer.name} images/s at c{level}",
                                       ours, peer, key, "rounds_throughput", ">", 1.0))  # fmt: skip
            if "web c1" in ours.best and "web c1" in peer.best:
                name = f"{ours.name} / {peer.name} images/s at c1"
                out.append(_paired(variant, name, ours, peer, "web c1", "rounds_throughput", ">=",
                                   1 / C1_SLACK))  # fmt: skip
        fastest = [(p.p50("web c1"), p.name, p) for p in peers if p.p50("web c1") is not None]
        if "web c1" in ours.best and fastest:
            best_ms, best_name, best = min(fastest, key=lambda f: f[0])
            name = f"{ours.name} p50 at c1 / fastest peer's ({best_name}, {best_ms:.1f} ms)"
            out.append(
                _paired(variant, name, ours, best, "web c1", "rounds_p50_ms", "<=", C1_SLACK)
            )
    return out


def _paired(
    variant: str, name: str, ours: Measured, peer: Measured, key: str, figure: str, op: str,
    limit: float,
) -> Target:  # fmt: skip
    paired = Paired.of(
        rounds_of(ours.best.get(key), figure), rounds_of(peer.best.get(key), figure),
        operator.truediv,
    )  # fmt: skip
    return Target(variant, name, paired.value, op, limit, rounds=paired.rounds)


def agreement(measured: list[Measured]) -> list[str]:
    ours = _reference(measured, "jpeg")
    if ours is None:
        return []
    ref = ours.top1()
    lines = []
    for m in measured:
        if m is ours:
            continue
        got = m.top1()
        shared = sorted(set(ref) & set(got))
        same = [k for k in shared if ref[k] == got[k]]
        diff = "; ".join(f"{k}: {got[k]} vs ours {ref[k]}" for k in shared if ref[k] != got[k])
        lines.append(
            f"- top-1 {m.name} vs service: {len(same)}/{len(shared)} photos agree"
            + (f" (differ: {diff})" if diff else "")
        )
    labels = ", ".join(f"{k}: {v}" for k, v in sorted(ref.items()))
    lines.append(f"- the service's top-1: {labels}")
    return lines


HEADER = (
    "| load | server / endpoint | images/s | p50 ms | p99 ms | server CPU ms/img (client) "
    "| RSS MB | errors | ÷ ours |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
)


def variant_table(result: dict[str, Any]) -> str:
    measured: list[Measured] = result["measured"]
    keys = sorted({k for m in measured for k in m.best}, key=_load_order)
    lines = [f"#### {result['variant']} ({result['weights']} weights)", "", HEADER]
    for key in keys:
        for m in measured:
            f = m.best.get(key)
            if f is None:
                continue
            ref = _reference(measured, m.kind)
            ours = ref.tput(key) if ref else None
            tput = m.tput(key)
            ratio = "" if m.is_reference or not ours or tput is None else f"{tput / ours:.2f}"
            cpu = f"{_f(f.get('server_cpu_ms_per_request'))} ({_f(f.get('cpu_ms_per_item'))})"
            cells = [
                key,
                m.name,
                _f(tput or 0.0),
                _f(f.get("p50_ms")),
                _f(f.get("p99_ms")),
                cpu,
                _f(f.get("rss_mb_during"), 0),
                str(f.get("errors", 0)),
                ratio,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    seen = set()
    for m in measured:
        if m.server in seen:
            continue
        seen.add(m.server)
        rss = max(x.peak_rss_mb for x in measured if x.server == m.server)
        versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
        settings = ", ".join(f"{k} {v}" for k, v in m.settings.items())
        lines.append(
            f"- {m.server}: start to ready {m.ready_s:.2f} s, peak RSS {rss:.0f} MB"
            f"; {versions}" + (f"; {settings}" if settings else "")
        )
    return "\n".join(lines + agreement(measured))


def _load_order(key: str) -> tuple[int, int]:
    workload, level = key.split(" c")
    return (workload != "web", int(level))


def render(
    results: list[dict[str, Any]],
    checked: list[Target],
    cond: dict[str, str],
    command: str,
    wall_s: float,
    counts: Any,
    levels: tuple[int, ...],
) -> str:
    lines = [
        f"### Peer benchmark run {cond['date']}",
        "",
        f"Command: `{command}` ({wall_s / 60:.1f} min)",
        "",
        f"Machine: {cond['cpu']}, {cond['cores']} cores; load average at start "
        f"{cond['load_average_at_start']}, at end {cond.get('load_average_at_end')}; "
        f"git {cond['git']}; Python {cond['python']}, onnxruntime {cond['onnxruntime']}.",
        "",
        f"Load: closed loop, web 640x480 JPEGs at c{', c'.join(map(str, levels))}, phone "
        f"4032x3024 JPEGs at c16 (JPEG endpoints); each level at most {counts.requests} "
        f"requests or {counts.level_seconds:.0f} s after {counts.warmup_per_connection} warm-up "
        f"request(s) per connection; best of {counts.rounds} interleaved round(s), every server "
        "up and idle when not measured. '÷ ours': images/s over our endpoint of the same kind "
        "(JPEG: /classify; client tensors: /v2 uint8).",
        "",
    ]
    for result in results:
        lines += [variant_table(result), ""]
    lines += [
        "#### Targets",
        "",
        "| variant | target | measured | limit | result |",
        "|---|---|---:|---:|---|",
        *(t.row() for t in checked),
        "",
    ]
    return "\n".join(lines)
