"""docker-compose.yml and deploy/k8s: the GPU, the probes, the variant as configuration, and
the pieces that must agree with each other and with the Dockerfile (targets, uid, paths)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pkg_helpers import ROOT, dockerfile_stages, k8s_manifests, load_yaml, load_yaml_all

COMPOSE = load_yaml(ROOT / "docker-compose.yml")
SERVICES = COMPOSE["services"]
_, STAGES = dockerfile_stages()
STAGE_NAMES = {s.name for s in STAGES}
VARIANT_FROM_ENV = "${EFFICIENTNET_VARIANT:-lite0}"
APP_UID = 10001  # the Dockerfile's `useradd --uid`


def _default_variant() -> str:
    # The variant the service looks for when neither EFFICIENTNET_VARIANT nor a model path is set.
    from service.config import DEFAULT_VARIANT

    return DEFAULT_VARIANT


# --- compose --------------------------------------------------------------------------------


def test_compose_reserves_one_nvidia_gpu_for_the_api() -> None:
    devices = SERVICES["api"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_compose_cpu_profile_runs_the_same_image_without_a_gpu() -> None:
    cpu, gpu = SERVICES["api-cpu"], SERVICES["api"]
    assert cpu["profiles"] == ["cpu"] and "profiles" not in gpu
    assert "deploy" not in cpu
    assert cpu["image"] == gpu["image"] and cpu["build"] == gpu["build"]
    assert cpu["environment"]["EFFICIENTNET_DEVICE"] == "cpu"


@pytest.mark.parametrize("name", ["api", "api-cpu", "export"])
def test_compose_variant_comes_from_env_or_dotenv(name: str) -> None:
    service = SERVICES[name]
    assert service["environment"]["EFFICIENTNET_VARIANT"] == VARIANT_FROM_ENV
    assert service["build"]["args"]["VARIANT"] == VARIANT_FROM_ENV
    assert VARIANT_FROM_ENV.endswith(f"{_default_variant()}}}")


def test_compose_export_job_fills_the_volume_before_the_api_starts() -> None:
    export, api = SERVICES["export"], SERVICES["api"]
    assert export["build"]["target"] == "export" and api["build"]["target"] == "runtime"
    assert {"export", "runtime"} <= STAGE_NAMES
    assert api["depends_on"] == {"export": {"condition": "service_completed_successfully"}}
    assert export["restart"] == "no"
    assert export["volumes"] == api["volumes"]
    data = [v for v in api["volumes"] if v["type"] == "volume"]
    assert [(v["source"], v["target"]) for v in data] == [("efficientnet-data", "/data")]
    assert "efficientnet-data" in COMPOSE["volumes"]
    assert any(v["type"] == "tmpfs" and v["target"] == "/tmp" for v in api["volumes"])


@pytest.mark.parametrize("name", ["api", "api-cpu"])
def test_compose_api_health_restart_port_and_hardening(name: str) -> None:
    service = SERVICES[name]
    check = service["healthcheck"]["test"]
    assert check == ["CMD", "efficientnet-healthcheck", "http://127.0.0.1:8000/readyz"]
    assert service["restart"] == "unless-stopped"
    assert service["ports"] == ["${EFFICIENTNET_HOST_PORT:-8000}:8000"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    # No value in the file: the key is read from the shell or .env at run time only.
    assert service["environment"]["EFFICIENTNET_API_KEY"] is None


def test_env_example_names_only_variables_compose_or_the_service_reads() -> None:
    from service.config import ENV_PREFIX, Settings

    compose_text = (ROOT / "docker-compose.yml").read_text()
    settings = {ENV_PREFIX + f.upper() for f in Settings.model_fields}
    names = re.findall(r"^#? ?(EFFICIENTNET_\w+)=", (ROOT / ".env.example").read_text(), re.M)
    assert "EFFICIENTNET_VARIANT" in names
    for name in names:
        assert name in compose_text or name in settings, f".env.example: {name} is read by nobody"


# --- Kubernetes -----------------------------------------------------------------------------

DOCS = load_yaml_all(k8s_manifests())
BY_KIND = {d["kind"]: d for d in DOCS}


def _pod() -> dict[str, Any]:
    return BY_KIND["Deployment"]["spec"]["template"]


def _container(name: str) -> dict[str, Any]:
    spec = _pod()["spec"]
    (found,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return found


def test_k8s_has_the_resources_issue_4_asks_for() -> None:
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= BY_KIND.keys()


def test_k8s_one_gpu_per_pod_and_resource_requests() -> None:
    resources = _container("api")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert _container("export-model")["resources"]["requests"]


def test_k8s_probes() -> None:
    api = _container("api")
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Liveness must never depend on the model: a slow load is not a dead process.
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["ports"] == [{"name": "http", "containerPort": 8000}]


def test_k8s_variant_in_env_for_both_containers() -> None:
    config = BY_KIND["ConfigMap"]
    assert config["data"]["EFFICIENTNET_VARIANT"] == _default_variant()
    for name in ("api", "export-model"):
        refs = [e["configMapRef"]["name"] for e in _container(name)["envFrom"]]
        assert refs == [config["metadata"]["name"]]
    key = _container("api")["env"][0]["valueFrom"]["secretKeyRef"]
    assert key["optional"] is True  # the API key comes from a Secret, when there is one


def test_k8s_non_root_read_only_and_no_service_links() -> None:
    spec = _pod()["spec"]
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["fsGroup"] == APP_UID
    for name in ("api", "export-model"):
        container = _container(name)["securityContext"]
        assert container["readOnlyRootFilesystem"] is True
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"]["drop"] == ["ALL"]
    # Service links would set EFFICIENTNET_PORT=tcp://..., which the settings would read.
    assert spec["enableServiceLinks"] is False


def test_k8s_model_reaches_the_pod_through_an_init_container_and_emptydir() -> None:
    spec = _pod()["spec"]
    init, api = _container("export-model"), _container("api")
    assert init["image"].startswith("efficientnet-service-export:")
    assert api["image"].startswith("efficientnet-service:")
    mounts = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}
    assert mounts == {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts == {"data": "/data", "tmp": "/tmp"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["data"] and "emptyDir" in volumes["tmp"]


def test_k8s_service_hpa_and_pdb_point_at_the_deployment() -> None:
    deployment = BY_KIND["Deployment"]
    labels = _pod()["metadata"]["labels"]
    service = BY_KIND["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "http"
    target = BY_KIND["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    hpa = BY_KIND["HorizontalPodAutoscaler"]["spec"]
    pdb = BY_KIND["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    # A drain must be able to evict a pod while the budget still holds.
    assert pdb["minAvailable"] < hpa["minReplicas"] <= hpa["maxReplicas"]
    assert deployment["spec"]["replicas"] >= hpa["minReplicas"]
