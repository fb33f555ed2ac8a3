"""Human tables and machine JSON for a list of outcomes."""

from __future__ import annotations

import json
from typing import Any

from .outcome import Outcome, Status


def table(outcome: Outcome) -> str:
    """One image's predictions as an aligned table."""
    assert outcome.result is not None
    result: dict[str, Any] = outcome.result
    predictions = result["predictions"]
    total = result.get("timing_ms", {}).get("total")
    took = f", {total:.1f} ms" if isinstance(total, (int, float)) else ""
    width = max([len("label"), *(len(p["label"]) for p in predictions)])
    lines = [f"{outcome.file}  ({result.get('variant', '?')}{took})"]
    lines.append(f"  {'#':>2}  {'label':<{width}}  {'score':>7}")
    for rank, p in enumerate(predictions, 1):
        lines.append(f"  {rank:>2}  {p['label']:<{width}}  {100 * p['score']:>6.2f}%")
    return "\n".join(lines)


def error_line(outcome: Outcome) -> str:
    status = outcome.status.value.replace("_", " ")
    detail = ", ".join(str(x) for x in (outcome.http_status, outcome.error_code) if x)
    where = f" ({detail})" if detail else ""
    return f"{outcome.file}: {status}{where}: {outcome.message}"


def human(outcomes: list[Outcome]) -> str:
    return "\n\n".join(table(o) for o in outcomes if o.status is Status.OK)


def machine(url: str, outcomes: list[Outcome]) -> str:
    return json.dumps({"url": url, "results": [o.as_json() for o in outcomes]}, indent=2)
