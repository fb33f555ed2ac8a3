"""The autoscalers' queries against the real Prometheus of conftest.py, which scrapes the one
service as two pods (scrape.py). Under load from the project's load generator:

- the Prometheus adapter's rule (deploy/k8s/prometheus-adapter/) finds each pod's series, and
  its query, filled in as the adapter fills it for the HPA, answers one value per pod;
- KEDA's trigger (deploy/k8s/alternatives/) answers the single value KEDA requires: the mean of
  the adapter's per-pod values at the same instant, so both autoscalers see one signal.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import yaml
from scrape import NAMESPACE, PODS, ROOT, SCRAPE_S, Scrape, query, series

K8S = ROOT / "deploy" / "k8s"
ADAPTER_CONFIG = K8S / "prometheus-adapter" / "adapter-config.yaml"
SCALED_OBJECT = K8S / "alternatives" / "keda-scaledobject.yaml"
OPERATING_DOC = ROOT / "docs" / "operating.md"
LOAD_S = 6  # a few scrapes' worth
pytestmark = pytest.mark.slow


def adapter_rule() -> dict[str, Any]:
    (configmap,) = yaml.safe_load_all(ADAPTER_CONFIG.read_text())
    (rule,) = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    return rule


def keda_query() -> str:
    (scaled_object,) = yaml.safe_load_all(SCALED_OBJECT.read_text())
    (trigger,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
    return trigger["metadata"]["query"]


def adapter_query(series_name: str) -> str:
    """The rule's metricsQuery as the adapter fills it when the HPA asks for PODS' metric: the
    series, matchers for the pods' namespace and names, grouped by pod. A template field the
    adapter would fill otherwise fails here (KeyError) rather than being sent unfilled."""
    values = {
        ".Series": series_name,
        ".LabelMatchers": f'namespace="{NAMESPACE}",pod=~"{"|".join(PODS)}"',
        ".GroupBy": "pod",
    }
    template = adapter_rule()["metricsQuery"]
    return re.sub(r"<<\s*(\.\w+)\s*>>", lambda m: values[m.group(1)], template)


def adapter_series(prometheus: str) -> str:
    """The name of the series the rule discovers, checked to be every pod's."""
    rule = adapter_rule()
    found = series(prometheus, rule["seriesQuery"])
    assert {(s["namespace"], s["pod"]) for s in found} == {(NAMESPACE, pod) for pod in PODS}
    (name,) = {s["__name__"] for s in found}
    assert re.search(rule["name"]["matches"], name), name
    return name


@pytest.fixture(scope="module")
def loaded(scrape: Scrape, photos: dict[str, Any]) -> float:
    """LOAD_S of 16 concurrent uploads, until the queue was seen non-empty on every pod (the
    gauge is read at scrape instants); the Unix time to evaluate the queries at."""
    argv = [sys.executable, "-m", "benchmarks.loadgen", "--url", f"{scrape.server.url}/classify"]
    argv += ["--file", str(photos["chelsea"].path), "--concurrency", "16"]
    argv += ["--requests", "100000", "--max-seconds", str(LOAD_S)]
    seen = "min(max_over_time(efficientnet_queue_depth[1m]))"
    for _ in range(3):
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["errors"] == 0 and result["count"] > 0, result
        time.sleep(2 * SCRAPE_S)  # the last scrape and its rule evaluation
        (queue,) = query(scrape.prometheus, seen)
        if float(queue["value"][1]) > 0:
            # An instant whose rule evaluations have all been written: the queries below then
            # read the same evaluation, not one half-written.
            return time.time() - 2 * SCRAPE_S
    raise AssertionError("under load the queue was never seen non-empty on every pod")


def test_the_adapter_finds_every_pods_series(scraped: str) -> None:
    adapter_series(scraped)


def test_the_adapter_answers_each_pods_queue(scraped: str, loaded: float) -> None:
    result = query(scraped, adapter_query(adapter_series(scraped)), at=loaded)
    assert sorted(s["metric"]["pod"] for s in result) == sorted(PODS)
    for per_pod in result:
        assert set(per_pod["metric"]) == {"pod"}, per_pod  # one value per pod, nothing else
        assert float(per_pod["value"][1]) > 0, per_pod


def test_keda_answers_the_mean_over_the_pods(scraped: str, loaded: float) -> None:
    keda = query(scraped, keda_query(), at=loaded)
    assert len(keda) == 1, f"KEDA needs a single value, got {keda}"
    per_pod = query(scraped, adapter_query(adapter_series(scraped)), at=loaded)
    mean = sum(float(s["value"][1]) for s in per_pod) / len(per_pod)
    assert float(keda[0]["value"][1]) == pytest.approx(mean) and mean > 0


def test_docs_list_the_autoscaling_queries() -> None:
    doc = OPERATING_DOC.read_text()
    rule = adapter_rule()
    for text in (rule["seriesQuery"], rule["metricsQuery"], keda_query()):
        assert text in doc, f"docs/operating.md lacks {text}"
