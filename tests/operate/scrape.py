"""A real Prometheus (Debian's) scraping a running service with deploy/monitoring/'s scrape config
and rules, as the tests of tests/operate/ share it (conftest.py), and the query they ask it.

The one service is scraped as two pods of one namespace: two targets labelled `namespace` and
`pod`, as Kubernetes service discovery labels a Deployment's pods, so per-pod queries (the
autoscalers') have pods to group by and average over.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from live_server import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules.yml"
SCRAPE_S = 1  # the test's scrape and rule evaluation interval
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
NAMESPACE = "efficientnet-test"
PODS = ("efficientnet-a", "efficientnet-b")


@dataclass(frozen=True)
class Scrape:
    prometheus: str  # its URL
    server: Server  # the service it scrapes


def scrape_config(target: str) -> dict[str, Any]:
    """deploy/monitoring/prometheus.yml, scraping ``target`` as PODS every SCRAPE_S."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    every = f"{SCRAPE_S}s"
    config["global"] = {"scrape_interval": every, "evaluation_interval": every}
    config["rule_files"] = [str(RULES)]
    config["scrape_configs"][0]["static_configs"] = [
        {"targets": [target], "labels": {"namespace": NAMESPACE, "pod": pod}} for pod in PODS
    ]
    return config


@contextmanager
def running_prometheus(server: Server, tmp: Path) -> Iterator[str]:
    """Prometheus scraping ``server``; its URL."""
    assert Path(PROMETHEUS).is_file(), (
        f"{PROMETHEUS} is missing: these tests need Debian's prometheus "
        "(`make test` installs it; or apt-get install prometheus)"
    )
    (tmp / "prometheus.yml").write_text(
        yaml.safe_dump(scrape_config(server.url.removeprefix("http://")))
    )
    port = free_port()
    argv = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (tmp / "prometheus.log").open("w") as log:
        prometheus = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
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
    """Until the rate windows hold enough scrapes of every pod (traffic keeps coming)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        traffic(server, photo)
        try:
            result = query(url, "count_over_time(efficientnet_ready[1m])")
        except httpx.HTTPError:
            result = []
        if len(result) == len(PODS) and min(float(s["value"][1]) for s in result) >= 6:
            return
        time.sleep(SCRAPE_S)
    raise AssertionError("Prometheus did not scrape the service in time")


def query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """The instant vector ``expr`` evaluates to, now or at the Unix time ``at``."""
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = at
    response = httpx.get(f"{url}/api/v1/query", params=params, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def series(url: str, selector: str) -> list[dict[str, str]]:
    """The label sets of the series ``selector`` matches (Prometheus' series API)."""
    response = httpx.get(f"{url}/api/v1/series", params={"match[]": selector}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (selector, body)
    return body["data"]
