"""docker-compose.yml's `monitoring` profile: Prometheus and Grafana with deploy/monitoring/ as it
is, on loopback, off by default. Their images come from a registry, which the test machines
cannot reach, so they are checked here (and resolved by the real Compose in `make image-test`),
never started; `make lint-compose` validates them against the Compose schema with the rest."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pkg_helpers import ROOT, load_yaml

COMPOSE = load_yaml(ROOT / "docker-compose.yml")
SERVICES = COMPOSE["services"]
MONITORING = ROOT / "deploy" / "monitoring"
SCRAPE = load_yaml(MONITORING / "prometheus.yml")
(DATASOURCE,) = load_yaml(MONITORING / "grafana/provisioning/datasources/prometheus.yml")[
    "datasources"
]
(PROVIDER,) = load_yaml(MONITORING / "grafana/provisioning/dashboards/efficientnet.yml")[
    "providers"
]


def binds(name: str) -> dict[str, str]:
    """target → source (relative to the repository) of a service's bind mounts."""
    volumes = SERVICES[name]["volumes"]
    return {v["target"]: v["source"] for v in volumes if v["type"] == "bind"}


def flag(name: str, service: dict[str, Any]) -> str:
    (value,) = [a.split("=", 1)[1] for a in service["command"] if a.startswith(f"--{name}=")]
    return value


def test_the_default_up_starts_what_it_did() -> None:
    default = {name for name, service in SERVICES.items() if "profiles" not in service}
    assert default == {"export", "api"}
    profiles = {name: s["profiles"] for name, s in SERVICES.items() if "profiles" in s}
    assert profiles == {
        "api-cpu": ["cpu"],
        "prometheus": ["monitoring"],
        "grafana": ["monitoring"],
    }


def test_monitoring_mounts_the_repository_files_read_only() -> None:
    for name in ("prometheus", "grafana"):
        for volume in SERVICES[name]["volumes"]:
            if volume["type"] == "bind":
                assert (ROOT / volume["source"]).exists(), volume["source"]
                assert volume["source"].startswith("./deploy/monitoring/")
                assert volume["read_only"] is True, volume


def test_prometheus_loads_the_scrape_config_and_its_rules() -> None:
    prometheus = SERVICES["prometheus"]
    mounts = binds("prometheus")
    config = PurePosixPath(flag("config.file", prometheus))
    assert mounts[str(config)] == "./deploy/monitoring/prometheus.yml"
    # rule_files are relative to the config file: each must be mounted beside it.
    for rule_file in SCRAPE["rule_files"]:
        assert mounts[str(config.parent / rule_file)] == f"./deploy/monitoring/{rule_file}"
    data = flag("storage.tsdb.path", prometheus)
    assert [v["target"] for v in prometheus["volumes"] if v["type"] == "volume"] == [data]
    assert prometheus["read_only"] is True


def test_the_addresses_in_deploy_monitoring_hold_on_the_host_network() -> None:
    prometheus, grafana = SERVICES["prometheus"], SERVICES["grafana"]
    assert prometheus["network_mode"] == grafana["network_mode"] == "host"
    # Prometheus scrapes the API where compose publishes it on the host.
    (published,) = SERVICES["api"]["ports"]
    host_port = published.rsplit(":", 1)[0]
    (target,) = SCRAPE["scrape_configs"][0]["static_configs"][0]["targets"]
    assert host_port.endswith(f":-{target.rsplit(':', 1)[1]}}}"), (host_port, target)
    # Grafana's datasource is Prometheus where it listens, on loopback only.
    listen = flag("web.listen-address", prometheus)
    assert urlsplit(DATASOURCE["url"]).netloc == listen
    assert listen.startswith("127.0.0.1:")
    assert grafana["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    grafana = SERVICES["grafana"]
    mounts = binds("grafana")
    provisioning = "./deploy/monitoring/grafana/provisioning"
    assert mounts["/etc/grafana/provisioning/datasources"] == f"{provisioning}/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == f"{provisioning}/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[home] == "./deploy/monitoring/grafana/dashboard.json"
    assert str(PurePosixPath(home).parent) == PROVIDER["options"]["path"]
    assert grafana["depends_on"] == ["prometheus"]
