"""The monitoring in deploy/monitoring/ against the real thing: Debian's Prometheus scrapes a
running ``python -m service`` and evaluates the rules, and every query of the Grafana dashboard
and of the rules returns data from it; promtool checks the rules and runs their unit tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from live_server import Server, free_port, model_env, running_server

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboard.json"
RULES = MONITORING / "rules.yml"
OPERATING_DOC = ROOT / "docs" / "operating.md"
SCRAPE_S = 1  # the test's scrape and rule evaluation interval
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = pytest.mark.slow


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_signal(expr: str) -> str:
    """What an alert compares with its threshold: ``<signal> <op> <number>``."""
    match = re.fullmatch(r"(.+?)\s*(>|<|==|>=|<=|!=)\s*[0-9.e-]+", expr.strip(), re.S)
    assert match, f"alert expression not of the form '<signal> <op> <number>': {expr}"
    return match.group(1)


def rule_queries() -> list[tuple[str, str]]:
    out = []
    for rule in rules():
        if "record" in rule:
            out.append((rule["record"], rule["expr"]))
        else:
            out.append((rule["alert"], alert_signal(rule["expr"])))
    return out


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    for argv in (["check", "rules", str(RULES)], ["test", "rules", "rules_test.yml"]):
        done = subprocess.run([PROMTOOL, *argv], cwd=MONITORING, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_one_grafana_dashboard_on_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml")
                                .read_text())["datasources"][0]  # fmt: skip
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "stat", "table", "gauge"}, panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}


def test_docs_list_every_query() -> None:
    doc = OPERATING_DOC.read_text()
    missing = [expr for _, expr in [*dashboard_queries(), *rule_queries()] if expr not in doc]
    assert not missing, f"docs/operating.md lacks {missing}"


@pytest.fixture(scope="module")
def scraped(
    lite0_onnx: Path, photos: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A service that has answered photos and refusals, scraped by a real Prometheus; its URL."""
    tmp = tmp_path_factory.mktemp("prometheus")
    photo = photos["chelsea"].path.read_bytes()
    with running_server(model_env(lite0_onnx), tmp / "service.log") as server:
        traffic(server, photo)
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        every = f"{SCRAPE_S}s"
        config["global"] = {"scrape_interval": every, "evaluation_interval": every}
        config["rule_files"] = [str(RULES)]
        target = server.url.removeprefix("http://")
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        argv = [
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with (tmp / "prometheus.log").open("w") as log:
            prometheus = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_samples(url, server, photo)
            yield url
        finally:
            prometheus.terminate()
            prometheus.wait(30)


def traffic(server: Server, photo: bytes) -> None:
    """Photos (batches and latencies), and refusals of two kinds (errors by code)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(10):
            assert client.post("/classify", content=photo).status_code == 200
        assert client.post("/classify", content=b"not an image").status_code in (400, 415)
        bad = client.post("/classify", content=b"x", headers={"content-type": "text/plain"})
        assert bad.status_code == 415


def wait_for_samples(url: str, server: Server, photo: bytes, seconds: float = 60) -> None:
    """Until the rate windows hold enough scrapes (traffic keeps coming meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        traffic(server, photo)
        try:
            result = query(url, "count_over_time(efficientnet_ready[1m])")
        except httpx.HTTPError:
            result = []
        if result and float(result[0]["value"][1]) >= 6:
            return
        time.sleep(SCRAPE_S)
    raise AssertionError("Prometheus did not scrape the service in time")


def query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


@pytest.mark.parametrize("name,expr", dashboard_queries() + rule_queries())
def test_every_query_returns_data_from_the_scrape(scraped: str, name: str, expr: str) -> None:
    result = query(scraped, expr)
    assert result, f"{name}: {expr} returned nothing"
    # A quantile of a route idle in the window is NaN (no requests: no latency); the route
    # under load must give a number.
    values = [float(series["value"][1]) for series in result]
    assert any(v == v for v in values), f"{name}: only NaN in {values}"


def test_the_recording_rules_ran(scraped: str) -> None:
    for rule in rules():
        if "record" in rule:
            assert query(scraped, rule["record"]), f"{rule['record']} was never recorded"
