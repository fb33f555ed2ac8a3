"""The targets compare the service with its limit round by round (report.Paired): no live servers
here, only the arithmetic the verdicts rest on."""

from __future__ import annotations

import pytest

from benchmarks.report import (
    INPROCESS_ROWS,
    Paired,
    ServerResult,
    Target,
    VariantResult,
    evaluate,
)
from benchmarks.run import round_steps


def _figures(throughputs: list[float], p50s: list[float] | None = None) -> dict[str, object]:
    p50s = p50s or [10.0] * len(throughputs)
    return {
        "count": 100,
        "throughput": max(throughputs),
        "p50_ms": min(p50s),
        "rounds_throughput": throughputs,
        "rounds_p50_ms": p50s,
    }


def _result(service_c16: list[float], limit: list[float]) -> VariantResult:
    inprocess = {
        "sequential": _figures([10.0] * len(limit), [20.0] * len(limit)),
        "pipelined": _figures(limit),
        "ort_batch1": _figures([100.0] * len(limit)),
        "pipelined_phone": _figures([30.0] * len(limit)),
    }
    service = ServerResult(
        "service",
        1.0,
        300.0,
        levels={1: _figures([40.0] * len(limit), [21.0, 23.5, 22.0][: len(limit)]),
                16: _figures(service_c16)},
        phone={16: _figures([27.0] * len(limit))},
    )  # fmt: skip
    return VariantResult("b0", "random", inprocess, {}, service=service)


def _target(result: VariantResult, name: str) -> Target:
    (target,) = [t for t in evaluate(result, strict_resources=False) if t.name == name]
    return target


def test_each_round_is_compared_with_its_own_limit() -> None:
    # Best of each side alone: 60 / 84 = 0.71. Round by round: 0.71, 1.03, 0.92 → 0.92.
    result = _result(service_c16=[60.0, 60.0, 60.0], limit=[84.0, 58.0, 65.0])
    target = _target(result, "service c16 / in-process pipeline")
    assert target.rounds == pytest.approx((60 / 84, 60 / 58, 60 / 65))
    assert target.value == pytest.approx(60 / 65)
    assert target.passed
    assert "(0.714, 1.03, 0.923)" in target.row()


def test_a_slow_service_fails_however_its_rounds_fall() -> None:
    result = _result(service_c16=[50.0, 52.0, 75.0], limit=[84.0, 58.0, 65.0])
    target = _target(result, "service c16 / in-process pipeline")
    assert target.value == pytest.approx(52 / 58)
    assert not target.passed


def test_latency_added_at_c1_is_the_median_of_the_rounds_differences() -> None:
    target = _target(_result([60.0] * 3, [60.0] * 3), "p50 at c1 minus in-process sequential p50")
    assert target.rounds == pytest.approx((1.0, 3.5, 2.0))
    assert target.value == pytest.approx(2.0) and target.passed


def test_a_measurement_missing_a_round_fails_its_target() -> None:
    assert Paired.of([1.0, 2.0], [1.0], lambda a, b: a / b).value is None
    assert Paired.of([], [], lambda a, b: a / b).value is None
    result = _result([60.0] * 3, [60.0] * 3)
    assert result.service is not None
    result.service.levels[16] = {"count": 0, "throughput": 0.0}  # served nothing
    target = _target(result, "service c16 / in-process pipeline")
    assert target.value is None and not target.passed


def test_a_round_runs_each_limit_right_before_the_loads_compared_with_it() -> None:
    levels = (1, 4, 16, 64)
    steps = round_steps(levels)
    measured = [name for which, _ in steps for name in which]
    assert sorted(measured) == sorted(key for key, _ in INPROCESS_ROWS)  # each row, once
    loads = [load for _, runs in steps for load in runs]
    assert sorted(loads) == sorted([("web", n) for n in levels] + [("phone", n) for n in (16, 64)])
    step_of = {load: i for i, (_, runs) in enumerate(steps) for load in runs}
    limit_of = {name: i for i, (which, _) in enumerate(steps) for name in which}
    assert step_of[("web", 1)] == limit_of["sequential"]  # the c1 latency target's two sides
    assert step_of[("web", 16)] == step_of[("web", 64)] == limit_of["pipelined"]
    assert step_of[("phone", 16)] == step_of[("phone", 64)] == limit_of["pipelined_phone"]


def test_onnxruntime_alone_is_a_row_not_a_target() -> None:
    # A service at its in-process limit passes however fast onnxruntime alone is: the bound
    # leaves out the decode every upload needs.
    result = _result(service_c16=[60.0] * 3, limit=[60.0] * 3)
    result.inprocess["ort_batch1"] = _figures([1000.0] * 3)
    targets = evaluate(result, strict_resources=False)
    assert targets and all(t.passed for t in targets), [t.row() for t in targets if not t.passed]
