"""`python -m benchmarks.loop_cost` end to end on tiny counts: this checkout's server, the
same code as a `--checkout` and uvicorn alone, every kind of request answered, the event loop's
CPU really read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
KINDS = [
    "GET /healthz",
    "classify tiny JPEG",
    "classify web, multipart",
    "classify web, raw body",
    "classify phone, multipart",
    "classify phone, raw body",
]


def test_every_kind_of_request_is_measured_on_each_server(
    bench_models: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["--variant", "b0", "--rounds", "1", "--requests", "5"]
    args += ["--models-dir", str(bench_models), "--out-dir", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loop_cost", *args, "--checkout", f"checkout={ROOT}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report,) = out.glob("loop-cost-b0-*.md")
    rows = [line.split(" | ") for line in report.read_text().splitlines()[2:]]
    measured = {
        (r[0].removeprefix("| "), r[1]): [float(c.strip(" |")) for c in r[2:]] for r in rows
    }
    servers = ("this checkout", "checkout", "uvicorn alone")
    assert set(measured) == {(k, s) for k in KINDS for s in servers}
    for (kind, server), (loop_ms, _kernel_ms, _server_ms, p50_ms) in measured.items():
        # The floor's p50 can print as 0.0 on a fast machine (0.2-0.3 ms here).
        assert loop_ms > 0 and (p50_ms > 0 or server == "uvicorn alone"), kind
    for server in ("this checkout", "checkout"):
        # Reading a 2 MB body costs the loop more than a GET with none: the figures are the
        # loop thread's own, per request.
        phone = measured[("classify phone, raw body", server)][0]
        assert phone > 2 * measured[("GET /healthz", server)][0]
        # The floor is a different server: it runs none of the pipeline (~0.1 ms against the
        # service's ~1.5 ms of loop CPU for a tiny JPEG).
        tiny = ("classify tiny JPEG", server)
        assert measured[("classify tiny JPEG", "uvicorn alone")][0] < measured[tiny][0]
