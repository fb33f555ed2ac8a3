"""`python -m benchmarks.service_levers` (which absorbed http_levers) end to end on tiny counts:
a `python -m service` configuration, a plain-uvicorn one and the service from a checkout (this
one, imported from its directory), a base --service-env, the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
CONFIGS = ["service defaults", "uvicorn CLI, asyncio + h11"]


def test_two_configurations_are_measured_side_by_side(bench_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--variant", "b0", "--rounds", "1", "--levels", "1", "--requests", "2"]
    args += ["--level-seconds", "5", "--no-phone", "--models-dir", str(bench_models)]
    args += ["--out-dir", str(out), "--service-env", "EFFICIENTNET_MAX_BATCH_SIZE=1"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.service_levers", *args, "--configs", *CONFIGS,
         "--checkout", f"checkout={ROOT}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report,) = out.glob("service-levers-b0-*.md")
    lines = report.read_text().splitlines()
    assert lines[0] == "| b0: setting | c1 | c1 p50 ms | web peak MB | errors |"
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert list(rows) == [*CONFIGS, "checkout"]
    for cells in rows.values():
        c1, p50, peak, errors = (float(c.strip(" |")) for c in cells)
        assert c1 > 0 and p50 > 0  # both servers answered, every request a real 200
        assert peak > 50  # a Python server with a model, its VmHWM really read
        assert errors == 0
