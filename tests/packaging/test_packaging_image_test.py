"""`make image-test` itself (tools/image_test.py), the parts that need no engine: it is what CI
runs, its compose override keeps every service off bridge networks, and a failure reads as
one line with the engine's own message."""

from __future__ import annotations

import re
import sys

import yaml
from pkg_helpers import ROOT, load_yaml

sys.path.insert(0, str(ROOT / "tools"))
import docker_engine
import image_test


class _ComposeLoader(yaml.SafeLoader):
    """Compose's `!reset` tag (drop the value merged from the base file) as an empty value."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: [])


def test_ci_runs_the_image_test_after_the_tests_and_their_skip_check() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    steps = [ci.index(s) for s in ("make test", "skipped", "make --no-print-directory image-test")]
    assert steps == sorted(steps)
    recipe = re.search(r"^image-test:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and recipe.group(1) == "$(BIN)/python tools/image_test.py"
    assert ".PHONY: image-test" in (ROOT / "Makefile").read_text()


def test_the_override_puts_every_compose_service_on_the_host_network() -> None:
    """A service added to docker-compose.yml without an override entry would get a bridge
    network from the engine, which these machines forbid: this fails first."""
    override = yaml.load(image_test.OVERRIDE.format(port=18000), Loader=_ComposeLoader)
    committed = load_yaml(ROOT / "docker-compose.yml")["services"]
    assert set(override["services"]) == set(committed)
    for name, service in override["services"].items():
        assert service["network_mode"] == "host", name
        if "ports" in committed[name]:
            assert service["ports"] == [], f"{name}: published ports need a bridge"
    assert override["networks"]["default"] == {"name": "host", "external": True}
    api = override["services"]["api-cpu"]
    assert api["environment"] == {"EFFICIENTNET_HOST": "127.0.0.1", "EFFICIENTNET_PORT": "18000"}
    assert "http://127.0.0.1:18000/readyz" in api["healthcheck"]["test"]


def test_the_engine_is_started_without_bridge_or_iptables() -> None:
    assert docker_engine.DOCKERD_FLAGS == ["--bridge=none", "--iptables=false", "--ip-masq=false"]
    assert "--read-only" in image_test.HARDENING and "ALL" in image_test.HARDENING


def test_a_failure_is_one_line_naming_the_step_and_the_engines_message() -> None:
    build_output = (
        "#9 [export 4/9] RUN pip install -r /tmp/requirements.txt\n"
        "#9 2.1 ERROR: No matching distribution found for torch>=9\n"
        "------\n"
        'error: failed to solve: process "/bin/sh -c pip install" did not complete: exit code: 1\n'
    )
    message = docker_engine._one_line(build_output)
    assert message.startswith("error: failed to solve:") and "\n" not in message
    try:
        with docker_engine.step("build export"):
            raise docker_engine.StepError(message)
    except docker_engine.StepError as exc:
        assert str(exc) == f"build export: {message}"
    try:  # the innermost step names the failure; a malformed answer is caught too
        with docker_engine.step("compose"), docker_engine.step("compose config"):
            {}["services"]
    except docker_engine.StepError as exc:
        assert str(exc) == "compose config: KeyError: 'services'"
