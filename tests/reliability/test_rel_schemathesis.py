"""schemathesis against the service's own OpenAPI schema, over a real server on 127.0.0.1.

The server runs with an API key (as deployed) and schemathesis sends it, so its auth checks
test the key for real. Reproducible: fixed seed, bounded examples; the JUnit report lands in
the test's tmp dir and the CLI's own output (with a curl line per failure) is in the
assertion message.

Excluded check: ``positive_data_acceptance``. The schema can say "binary", not "an image
Pillow decodes", so a schema-valid random byte string is rightly refused with 400/415.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from live_server import Server
from reliability_helpers import API_KEY, REQUEST_TIMEOUT_S

EXAMPLES = 25
SEED = 0


def schemathesis(server: Server, report_dir: Path, checks: str, *select: str) -> None:
    """Run the schemathesis CLI; fail with its report when any check fails."""
    st = Path(sys.executable).with_name("st")
    config = report_dir / "schemathesis.toml"
    # The served model's name: random names only ever reach the 404 branch of /v2 routes.
    config.write_text('[parameters]\n"path.model_name" = "efficientnet_lite0"\n')
    cmd = [str(st), "--config-file", str(config), "run", f"{server.url}/openapi.json"]
    cmd += ["--checks", checks]
    cmd += ["--exclude-checks", "positive_data_acceptance", "--phases", "examples,coverage,fuzzing"]
    cmd += ["--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1"]
    cmd += ["--header", f"Authorization: Bearer {API_KEY}", "--continue-on-failure"]
    cmd += ["--request-timeout", str(REQUEST_TIMEOUT_S + 10), "--suppress-health-check", "all"]
    cmd += ["--report", "junit", "--report-dir", str(report_dir), *select]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    summary = done.stdout[done.stdout.rfind("SUMMARY") - 40 :]
    print(summary)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-2000:]
    assert "generated" in summary, "schemathesis generated no test cases"
    server.assert_alive()


def test_service_api_conforms_to_its_schema(keyed: Server, tmp_path: Path) -> None:
    """/classify, /classify/batch, health, readiness, metadata, metrics and the page: every
    check (no 5xx, documented status codes, content types, headers, response schemas, auth)."""
    schemathesis(keyed, tmp_path, "all", "--exclude-path-regex", "^/v2")


def test_open_inference_protocol_documents_its_status_codes(keyed: Server, tmp_path: Path) -> None:
    """The /v2 (Open Inference Protocol) routes under every check (no 5xx, documented status
    codes, content types, response schemas, auth): they answer 400 (malformed body), 401 (no
    key), 404 (unknown model) and 503, each documented in the protocol's error shape, and infer
    has a request body schema."""
    schemathesis(keyed, tmp_path, "all", "--include-path-regex", "^/v2")
