"""The autoscaling of deploy/k8s: one autoscaler applied by default (hpa.yaml), its queue-depth
metric served by the Prometheus adapter's rule, the KEDA alternative equal to it, both reading the
recording rules of deploy/monitoring/rules.yml, and the target tied to the service's batch size.
tests/operate/test_autoscaling_queries.py runs their queries against a real Prometheus."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from pkg_helpers import K8S, ROOT, k8s_alternatives, k8s_by_kind, k8s_manifests, pod_settings

DEFAULT = k8s_by_kind(k8s_manifests())
ALTERNATIVES = k8s_by_kind(k8s_alternatives())
HPA = DEFAULT["HorizontalPodAutoscaler"]["spec"]
SCALED_OBJECT = ALTERNATIVES["ScaledObject"]
KEDA = SCALED_OBJECT["spec"]
ADAPTER_CONFIG = K8S / "prometheus-adapter" / "adapter-config.yaml"
KEDA_SCHEMA = json.loads((ROOT / "deploy" / "schemas" / "keda-scaledobject.json").read_text())
RULES = yaml.safe_load((ROOT / "deploy" / "monitoring" / "rules.yml").read_text())
RECORDED = {r["record"] for g in RULES["groups"] for r in g["rules"] if "record" in r}


def adapter_rule() -> dict[str, Any]:
    (configmap,) = yaml.safe_load_all(ADAPTER_CONFIG.read_text())
    (rule,) = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    return rule


def hpa_metric(kind: str) -> dict[str, Any]:
    (metric,) = [m[kind.lower()] for m in HPA["metrics"] if m["type"] == kind]
    return metric


def keda_trigger(kind: str) -> dict[str, Any]:
    (trigger,) = [t for t in KEDA["triggers"] if t["type"] == kind]
    return trigger


def test_one_autoscaler_is_applied_by_default_and_keda_is_the_alternative() -> None:
    assert "ScaledObject" not in DEFAULT
    assert set(ALTERNATIVES) == {"ScaledObject"}, "alternatives/ holds what replaces hpa.yaml"
    deployment = DEFAULT["Deployment"]
    target = {"apiVersion": deployment["apiVersion"], "kind": "Deployment"}
    target["name"] = deployment["metadata"]["name"]
    assert HPA["scaleTargetRef"] == target == KEDA["scaleTargetRef"]


def test_the_hpa_reads_the_pods_metric_the_adapter_serves() -> None:
    rule = adapter_rule()
    series = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}", rule["seriesQuery"])
    assert series, rule["seriesQuery"]
    name, matchers = series.groups()
    assert name in RECORDED, f"the adapter reads {name}, which rules.yml does not record"
    assert re.search(rule["name"]["matches"], name)
    assert hpa_metric("Pods")["metric"]["name"] == rule["name"]["as"]
    # The HPA asks for its pods by namespace and name: the series must carry both labels.
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert 'namespace!=""' in matchers and 'pod!=""' in matchers
    # One value per pod, which the HPA averages over the pods.
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]


def test_keda_reads_the_recording_rule_that_averages_over_the_pods() -> None:
    trigger = keda_trigger("prometheus")
    assert trigger["metadata"]["query"] in RECORDED
    # The query averages per pod already: the HPA must compare it with the threshold as it is
    # (Value), not divide it by the replicas again (KEDA's default, AverageValue).
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"]["ignoreNullValues"] == "false"


def test_the_queue_target_is_one_gpu_batch_per_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = pod_settings(monkeypatch).batch_policy("CUDAExecutionProvider").max_batch_size
    assert hpa_metric("Pods")["target"] == {"type": "AverageValue", "averageValue": str(batch)}
    assert float(keda_trigger("prometheus")["metadata"]["threshold"]) == batch


def test_keda_scales_like_the_hpa() -> None:
    assert (KEDA["minReplicaCount"], KEDA["maxReplicaCount"]) == (
        HPA["minReplicas"],
        HPA["maxReplicas"],
    )
    assert KEDA["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == HPA["behavior"]
    cpu, trigger = hpa_metric("Resource"), keda_trigger("cpu")
    assert cpu["name"] == "cpu" and trigger["metricType"] == cpu["target"]["type"]
    assert int(trigger["metadata"]["value"]) == cpu["target"]["averageUtilization"]
    assert trigger["metadata"]["containerName"] == "api"


# --- the ScaledObject's schema (what `make lint-k8s` checks it with) ------------------------


def test_the_schema_accepts_the_scaled_object() -> None:
    jsonschema.Draft202012Validator.check_schema(KEDA_SCHEMA)
    jsonschema.validate(SCALED_OBJECT, KEDA_SCHEMA, cls=jsonschema.Draft202012Validator)


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with ``value`` at the dotted ``path`` (numbers index lists; None deletes)."""
    broken = copy.deepcopy(document)
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    node: Any = broken
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return broken


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("spec.minReplicas", 2, "'minReplicas' was unexpected"),
        ("spec.triggers.0.metadata.threshold", 32, "32 is not of type 'string'"),
        ("spec.triggers.0.metadata.treshold", "32", "'treshold' was unexpected"),
        ("spec.triggers.0.metadata.query", None, "'query' is a required property"),
        ("spec.triggers.0.metricType", "Utilization", "is not one of ['AverageValue', 'Value']"),
        ("spec.scaleTargetRef.name", None, "'name' is a required property"),
        ("spec.maxReplicaCount", "8", "'8' is not of type 'integer'"),
        ("apiVersion", "keda.k8s.io/v1alpha1", "'keda.sh/v1alpha1' was expected"),
    ],
)
def test_the_schema_refuses_a_broken_scaled_object(path: str, value: Any, message: str) -> None:
    errors = jsonschema.Draft202012Validator(KEDA_SCHEMA).iter_errors(
        _set(SCALED_OBJECT, path, value)
    )
    messages = [e.message for e in errors]
    assert any(message in m for m in messages), messages
