"""deploy/k8s/deployment.yaml's shutdown timings against the drain the service does, recomputed
from the service's own settings as a pod gets them (defaults + configmap.yaml): the grace period
covers the preStop pause and the longest drain, and readiness reports a drain within the pause.
The arithmetic, in words, is the comment above terminationGracePeriodSeconds."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import yaml
from live_server import READY_DROP_S
from pkg_helpers import ROOT, k8s_by_kind, k8s_manifests, pod_settings

from service.config import ENV_PREFIX, Settings, load_settings

DEPLOYMENT = k8s_by_kind(k8s_manifests())["Deployment"]


def longest_drain_s(settings: Settings) -> float:
    """From SIGTERM to the last connection closed, at worst. uvicorn lets every request in
    progress finish: one still receiving its body has the request timeout for the body (the edge's
    body guard), then the request timeout again to be classified (the pipeline's own deadline);
    one whose body is cut at its deadline (408) lingers up to linger_s before its close. Before
    all that, EFFICIENTNET_DRAIN_DELAY_S of serving while not ready (0 here: preStop does it)."""
    timeout = settings.request_timeout_s
    return settings.drain_delay_s + max(timeout + timeout, timeout + settings.linger_s)


def shutdown_problems(deployment: dict[str, Any], settings: Settings) -> list[str]:
    spec = deployment["spec"]["template"]["spec"]
    (api,) = [c for c in spec["containers"] if c["name"] == "api"]
    pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = spec["terminationGracePeriodSeconds"]
    readiness = api["readinessProbe"]
    problems = []
    drain = longest_drain_s(settings)
    if grace < pre_stop + drain:
        problems.append(f"grace {grace} s < preStop {pre_stop} s + longest drain {drain:g} s")
    seen = READY_DROP_S + readiness["periodSeconds"] * readiness["failureThreshold"]
    if seen > pre_stop:
        problems.append(f"readiness sees a drain after {seen:g} s, past the {pre_stop} s preStop")
    if readiness["timeoutSeconds"] >= readiness["periodSeconds"]:
        problems.append("a readiness probe may still be waiting when the next one starts")
    if api["livenessProbe"]["httpGet"]["path"] != "/healthz":
        problems.append("liveness must not depend on load or readiness: /healthz")
    return problems


def test_the_deployment_gives_the_drain_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert shutdown_problems(DEPLOYMENT, pod_settings(monkeypatch)) == []


def test_a_longer_request_timeout_in_the_configmap_needs_a_longer_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = pod_settings(monkeypatch)
    longer = settings.model_copy(update={"request_timeout_s": settings.request_timeout_s * 2})
    (problem,) = shutdown_problems(DEPLOYMENT, longer)
    assert problem.startswith("grace ")


@pytest.mark.parametrize(
    "path,value,expected",
    [
        (("terminationGracePeriodSeconds",), 45, "grace 45 s"),
        (("containers", 0, "lifecycle", "preStop", "sleep", "seconds"), 20, "grace "),
        (("containers", 0, "readinessProbe", "periodSeconds"), 5, "readiness sees a drain"),
        (("containers", 0, "readinessProbe", "timeoutSeconds"), 3, "may still be waiting"),
        (("containers", 0, "livenessProbe", "httpGet", "path"), "/readyz", "liveness"),
    ],
)
def test_a_mistimed_deployment_is_refused(
    path: tuple[Any, ...], value: Any, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    node = broken["spec"]["template"]["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    problems = shutdown_problems(broken, pod_settings(monkeypatch))
    assert any(expected in p for p in problems), problems


def test_compose_gives_the_drain_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker compose stop waits stop_grace_period before SIGKILL: the longest drain of the
    service's defaults must fit (compose passes no timeout or linger settings)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grace = compose["x-api"]["stop_grace_period"]
    assert grace.endswith("s"), grace
    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    assert float(grace[:-1]) >= longest_drain_s(load_settings()), grace
