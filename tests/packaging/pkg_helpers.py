"""Helpers for the packaging tests: run make targets, read the Dockerfile and YAML manifests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
# The venv running these tests holds the linters (the `dev` extra), whatever its path.
VENV = Path(sys.prefix)


# make's own variables and the Makefile's knobs. Under `make test PYTEST_ARGS=...` make exports
# command-line variables to its children, and an inherited MAKEFLAGS (say `-n` or `-k`) or
# knob would change what the nested make under test does.
MAKE_ENV = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
MAKEFILE_KNOBS = {
    "PYTHON", "VENV", "VARIANT", "MODEL_DIR", "HOST", "PORT", "PYTEST_ARGS", "BENCH_ARGS",
    "SOAK_ARGS",
    "RUFF_PATHS", "DOCKERFILE", "HADOLINT_CONFIG", "COMPOSE_FILES", "COMPOSE_SCHEMA",
    "K8S_MANIFESTS", "K8S_VERSION", "KEDA_MANIFESTS", "KEDA_SCHEMA", "SHELL_SCRIPTS", "CHROMIUM",
}  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without make's variables or the Makefile's knobs, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV | MAKEFILE_KNOBS}
    env.update(extra)
    return env


def run_make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`make -C ROOT VENV=<this venv> args...`, output captured as text."""
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={VENV}", *args]
    return subprocess.run(
        cmd, env=env or clean_env(), capture_output=True, text=True, timeout=120, check=False
    )


@dataclass
class Stage:
    """One `FROM ... AS name` stage: its base and its instructions as (KEYWORD, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    @property
    def text(self) -> str:
        return "\n".join(f"{kw} {arg}" for kw, arg in self.instructions)


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs with comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    pairs = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), re.sub(r"\s+", " ", rest).strip()))
    return pairs


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults before the first FROM, the stages in order)."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in dockerfile_instructions(path.read_text()):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?: AS (\S+))?", args, flags=re.IGNORECASE)
            assert match, f"unparsed FROM {args!r}"
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
    return global_args, stages


def arg_defaults(stage: Stage) -> dict[str, str]:
    return {name: default for name, _, default in (a.partition("=") for a in stage.args_of("ARG"))}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(paths: list[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


K8S = ROOT / "deploy" / "k8s"


def k8s_manifests() -> list[Path]:
    """What `kubectl apply -f deploy/k8s/` applies: the folder's own files, not its sub-folders."""
    return sorted(K8S.glob("*.yaml"))


def k8s_alternatives() -> list[Path]:
    """Manifests that replace a default one (deploy/k8s/alternatives/), applied by hand."""
    return sorted((K8S / "alternatives").glob("*.yaml"))


def k8s_by_kind(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """The one document of each kind in ``paths`` (a second one of a kind fails)."""
    docs = load_yaml_all(paths)
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), f"more than one of a kind in {kinds}"
    return {d["kind"]: d for d in docs}


def pod_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's Settings in a pod of deploy/k8s: its defaults plus deploy/k8s/
    configmap.yaml's values, with this machine's own EFFICIENTNET_* variables left out."""
    from service.config import ENV_PREFIX, load_settings

    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    (configmap,) = [d for d in load_yaml_all(k8s_manifests()) if d["kind"] == "ConfigMap"]
    for name, value in configmap["data"].items():
        monkeypatch.setenv(name, value)
    return load_settings()
