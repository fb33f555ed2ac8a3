"""The short soak (``tools/soak.py --duration 20``): the same tool ``make soak`` runs for five
minutes, here as a CI gate on zero 5xx, zero wrong answers and bounded RSS growth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from live_server import ROOT, clean_env

DURATION_S = 20


def test_short_soak(lite0_onnx: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "tools" / "soak.py"), "--model", str(lite0_onnx)]
    # Half the run as warm-up: RSS still climbs in the first seconds (allocator arenas, caches).
    cmd += ["--duration", str(DURATION_S), "--warmup", str(DURATION_S // 2), "--concurrency", "6"]
    cmd += ["--json", str(report_path), "--log", str(tmp_path / "server.log")]
    done = subprocess.run(
        cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=DURATION_S + 120
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["failures"] == []
    assert report["server_errors"] == report["wrong_answers"] == report["transport_errors"] == 0
    assert report["rss_growth_pct"] < 10.0
    # Both sides of the mix really ran: photos classified and every kind of refusal seen.
    assert set(report["by_status"]) == {"200", "400", "413", "415", "422"}, report["by_status"]
    assert report["requests"] >= 10 * DURATION_S, report["requests"]
