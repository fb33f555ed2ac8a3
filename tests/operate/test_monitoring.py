"""The monitoring in deploy/monitoring/ against the real thing: Debian's Prometheus scrapes a
running ``python -m service`` and evaluates the rules, and every query of the Grafana dashboard
and of the rules returns data from it; promtool checks the rules and runs their unit tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from scrape import MONITORING, ROOT, RULES, query

DASHBOARD = MONITORING / "grafana" / "dashboard.json"
OPERATING_DOC = ROOT / "docs" / "operating.md"
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
