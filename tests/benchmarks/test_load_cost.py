"""`python -m benchmarks.load_cost` end to end on tiny counts: the in-process limit and two
servers (this checkout's, and the same code as a `--checkout`) measured, the event loop's and
the server's CPU per image really read, the machine's idle share within 0-100 %."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_limit_and_each_server_are_measured(bench_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--variant", "b0", "--rounds", "1", "--requests", "12", "--concurrency", "4"]
    args += ["--models-dir", str(bench_models), "--out-dir", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_cost", *args, "--checkout", f"checkout={ROOT}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report,) = out.glob("load-cost-b0-*.md")
    rows = {
        r[0].removeprefix("| "): [c.strip(" |") for c in r[1:]]
        for r in (line.split(" | ") for line in report.read_text().splitlines()[2:])
    }
    assert set(rows) == {"in-process pipeline", "this checkout", "checkout"}
    assert float(rows["in-process pipeline"][1]) == 1.0
    for name, (rate, _ratio, idle, *cpu) in rows.items():
        assert float(rate) > 0 and 0 <= float(idle) <= 100, name
        if name != "in-process pipeline":
            loop_ms, server_ms = (float(c) for c in cpu)
            # The loop is one thread of the server: some of its CPU, never all of it.
            assert 0 < loop_ms < server_ms, name
