"""Each static check CI runs passes on the real file and fails the build on a broken copy.

The checks are the real make targets `.ci/run` calls through `make lint`, pointed at a copy of
the real file with one realistic mistake, so a check that silently passes everything (a
wrong path, a swallowed exit code, a schema that matches anything) fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pkg_helpers import ROOT, VENV, clean_env, k8s_manifests, run_make


@dataclass(frozen=True)
class Breakage:
    id: str
    target: str  # the make target
    variable: str  # the make variable naming the checked file(s)
    source: str  # the real file, relative to the repo
    old: str  # text replaced in the copy...
    new: str  # ...by this mistake
    expected: str  # what the tool must say about it


BREAKAGES = [
    Breakage(
        "ruff-unused-import", "lint-python", "RUFF_PATHS", "docker/healthcheck.py",
        "import sys\n", "import json\nimport sys\n", "F401",
    ),
    Breakage(
        "ruff-format", "lint-python", "RUFF_PATHS", "docker/healthcheck.py",
        "TIMEOUT_S = 4.0", "TIMEOUT_S =   4.0", "would be reformatted",
    ),
    Breakage(
        "shellcheck-unquoted-args", "lint-shell", "SHELL_SCRIPTS", "docker/entrypoint.sh",
        '--port "${port}" "$@"', '--port "${port}" $@', "SC2068",
    ),
    Breakage(
        "hadolint-root-user", "lint-dockerfile", "DOCKERFILE", "Dockerfile",
        "USER 10001:10001\nWORKDIR /data", "USER root\nWORKDIR /data", "DL3002",
    ),
    Breakage(
        "hadolint-latest-tag", "lint-dockerfile", "DOCKERFILE", "Dockerfile",
        "FROM ${PYTHON_IMAGE} AS base", "FROM python:latest AS base", "DL3007",
    ),
    Breakage(
        "compose-capabilities-not-a-list", "lint-compose", "COMPOSE_FILES", "docker-compose.yml",
        "capabilities: [gpu]", "capabilities: gpu", "is not of type 'array'",
    ),
    Breakage(
        "compose-unknown-key", "lint-compose", "COMPOSE_FILES", "docker-compose.yml",
        "    restart: \"no\"", "    restart_policy: \"no\"", "restart_policy",
    ),
    Breakage(
        "k8s-misspelt-probe", "lint-k8s", "K8S_MANIFESTS", "deploy/k8s/deployment.yaml",
        "readinessProbe:", "readinessprobe:", "'readinessprobe' was unexpected",
    ),
    Breakage(
        "k8s-wrong-type", "lint-k8s", "K8S_MANIFESTS", "deploy/k8s/hpa.yaml",
        "maxReplicas: 8", "maxReplicas: eight", "'eight' is not of type 'integer'",
    ),
    Breakage(
        "k8s-adapter-configmap-not-strings", "lint-k8s", "K8S_MANIFESTS",
        "deploy/k8s/prometheus-adapter/adapter-config.yaml",
        "  config.yaml: |\n", "  config.yaml:\n", "is not of type 'string'",
    ),
    Breakage(
        "keda-numeric-threshold", "lint-k8s", "KEDA_MANIFESTS",
        "deploy/k8s/alternatives/keda-scaledobject.yaml",
        'threshold: "32"', "threshold: 32", "32 is not of type 'string'",
    ),
    Breakage(
        "keda-hpa-field-name", "lint-k8s", "KEDA_MANIFESTS",
        "deploy/k8s/alternatives/keda-scaledobject.yaml",
        "minReplicaCount: 2", "minReplicas: 2", "'minReplicas' was unexpected",
    ),
]  # fmt: skip


# The whole tree's ruff run is CI's own `make lint`; here only the files this suite owns, so
# another part's work in progress does not fail the packaging tests.
REAL_FILES = {"lint-python": ["RUFF_PATHS=docker tests/packaging"]}


@pytest.mark.parametrize("target", sorted({b.target for b in BREAKAGES}))
def test_check_passes_on_the_real_files(target: str) -> None:
    done = run_make(target, *REAL_FILES.get(target, []))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.id for b in BREAKAGES])
def test_check_fails_on_a_broken_copy(breakage: Breakage, tmp_path: Path) -> None:
    original = (ROOT / breakage.source).read_text()
    assert original.count(breakage.old) == 1, f"{breakage.source} changed: update this case"
    broken = tmp_path / Path(breakage.source).name
    broken.write_text(original.replace(breakage.old, breakage.new))

    done = run_make(breakage.target, f"{breakage.variable}={broken}")

    output = done.stdout + done.stderr
    assert done.returncode != 0, f"{breakage.target} passed a broken file:\n{output}"
    assert breakage.expected in output, output


def test_compose_check_fails_on_unparsable_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api: [\n")
    done = run_make("lint-compose", f"COMPOSE_FILES={broken}")
    assert done.returncode != 0
    assert "Failed to parse" in done.stdout + done.stderr


def test_k8s_check_covers_every_manifest() -> None:
    done = run_make("lint-k8s")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    paths = [*k8s_manifests(), *sorted((ROOT / "deploy/k8s").glob("*/*.yaml"))]
    names = {p.relative_to(ROOT).as_posix() for p in paths}
    assert {"deploy/k8s/hpa.yaml", "deploy/k8s/alternatives/keda-scaledobject.yaml"} <= names
    custom = {p for p in names if p.startswith("deploy/k8s/alternatives/keda-")}
    for name in names - custom:
        assert f"{name} passed" in output, name
    # kubernetes-validate passes a kind it has no schema for with a warning: each custom
    # resource goes to its own schema instead.
    assert "Couldn't find schema" not in output
    keda = re.search(r"check-jsonschema --schemafile (\S+) (.+)", output)
    assert keda and set(keda.group(2).split()) == custom, output
    assert (ROOT / keda.group(1)).is_file() and "ok -- validation done" in output


def test_lint_runs_every_check() -> None:
    # `make -n` prints without running, but still recurses into `$(MAKE) lint-...`.
    done = run_make("-n", "lint")
    assert done.returncode == 0, done.stderr
    for command in (
        "ruff check",
        "ruff format --check",
        "shellcheck",
        "hadolint --config docker/hadolint.yaml Dockerfile",
        "check-jsonschema --schemafile docker/compose-spec.json docker-compose.yml",
        "kubernetes-validate --strict",
        "check-jsonschema --schemafile deploy/schemas/keda-scaledobject.json",
    ):
        assert command in done.stdout, f"`make lint` does not run {command!r}:\n{done.stdout}"


def test_compose_schema_is_the_compose_specification() -> None:
    schema = (ROOT / "docker" / "compose-spec.json").read_text()
    assert '"title": "Compose Specification"' in schema
    # The deploy.resources.reservations.devices shape the GPU reservation relies on.
    assert '"capabilities"' in schema and '"driver"' in schema


# --- .ci/run itself, with a stand-in `make` whose results we choose -------------------------


def _fake_make(tmp_path: Path, lint_rc: int, summary: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    script = bin_dir / "make"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        f'if [[ " $* " == *" lint "* ]]; then exit {lint_rc}; fi\n'
        f"echo {summary!r}\n"
    )
    script.chmod(0o755)
    return bin_dir


def _run_ci(tmp_path: Path, lint_rc: int, summary: str) -> tuple[int, str, list[str]]:
    bin_dir = _fake_make(tmp_path, lint_rc, summary)
    env = clean_env(PATH=f"{bin_dir}:{VENV / 'bin'}:/usr/bin:/bin", CI="true")
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls_file = tmp_path / "calls"
    calls = calls_file.read_text().splitlines() if calls_file.exists() else []
    return done.returncode, done.stdout + done.stderr, calls


def test_ci_fails_when_a_lint_check_fails(tmp_path: Path) -> None:
    rc, output, calls = _run_ci(tmp_path, lint_rc=2, summary="== 5 passed in 1.00s ==")
    assert rc != 0, output
    assert not any(" test" in f" {c}" for c in calls), f"tests ran after a lint failure: {calls}"


def test_ci_fails_when_a_test_is_skipped(tmp_path: Path) -> None:
    rc, output, calls = _run_ci(tmp_path, lint_rc=0, summary="== 5 passed, 1 skipped in 1.00s ==")
    assert rc != 0, output
    assert "skipped" in output
    assert not any("image-test" in c for c in calls), calls


def test_ci_passes_and_ends_with_the_pytest_summary(tmp_path: Path) -> None:
    rc, output, calls = _run_ci(tmp_path, lint_rc=0, summary="== 5 passed in 1.00s ==")
    assert rc == 0, output
    assert output.rstrip().splitlines()[-1] == "== 5 passed in 1.00s =="
    assert [c.split()[-2:] for c in calls] == [
        ["--no-print-directory", "lint"],
        ["test", "PYTEST_ARGS=-rs"],
        ["--no-print-directory", "image-test"],
    ]


def test_ci_script_is_strict_bash() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert shutil.which("make"), "make is needed by .ci/run"
