"""The Dockerfile's promises, read from the file itself (no Docker engine here): a torch-free,
non-root runtime with a /readyz health check that survives a read-only root filesystem, built
with the same pip installs CI exercises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from pkg_helpers import ROOT, Stage, arg_defaults, clean_env, dockerfile_stages

GLOBAL_ARGS, STAGES = dockerfile_stages()
BY_NAME = {s.name: s for s in STAGES}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Stages whose contents end up in the served image.
SERVING = ("runtime-build", "runtime")


def _env(stage: Stage) -> dict[str, str]:
    """ENV values in effect in `stage`, inherited along its FROM chain."""
    chain = [stage]
    while chain[-1].base in BY_NAME:
        chain.append(BY_NAME[chain[-1].base])
    env: dict[str, str] = {}
    for s in reversed(chain):
        for args in s.args_of("ENV"):
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def _pip_install_args(stage: Stage) -> list[str]:
    """The arguments of the stage's last `pip install` (the project's own; the one before it
    installs the wheels pyproject.toml lists), with the stage's ARG defaults filled in."""
    defaults = arg_defaults(stage)
    for run in reversed(stage.args_of("RUN")):
        match = re.search(r"pip install (.+?)(?: &&|$)", run)
        if match:
            words = match.group(1).replace("'", "").replace('"', "").split()
            words = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], w) for w in words]
            return [w for w in words if not w.startswith("--")]
    raise AssertionError(f"no pip install in stage {stage.name}")


def test_stages_and_default_target() -> None:
    assert [s.name for s in STAGES] == ["base", "export", "runtime-build", "runtime"]
    # `docker build .` without --target builds the last stage: the torch-free runtime.
    assert STAGES[-1].name == "runtime"


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    users = BY_NAME["runtime"].args_of("USER")
    assert users, "runtime has no USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0


def test_runtime_health_check_polls_readyz_on_the_served_port() -> None:
    (check,) = BY_NAME["runtime"].args_of("HEALTHCHECK")
    assert "CMD" in check
    (probe,) = json.loads(check.split("CMD", 1)[1])  # no URL: the probe's default applies
    copied = " ".join(BY_NAME["runtime"].args_of("COPY"))
    assert f"docker/healthcheck.py /usr/local/bin/{probe}" in copied
    # That default is /readyz on EFFICIENTNET_PORT, the port docker/entrypoint.sh binds, so a
    # host-network container on another port (make image-test) is probed where it listens.
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert 'port="${EFFICIENTNET_PORT:-8000}"' in entrypoint and '--port "${port}"' in entrypoint
    for port in (None, "18123"):
        assert _probe_default_url(port) == f"http://127.0.0.1:{port or 8000}/readyz"
    # A Kubernetes service link's EFFICIENTNET_PORT=tcp://IP:PORT is not a port: 8000, as the
    # entrypoint does.
    assert _probe_default_url("tcp://10.0.0.1:80") == "http://127.0.0.1:8000/readyz"


def _probe_default_url(port: str | None) -> str:
    env = clean_env()
    env.pop("EFFICIENTNET_PORT", None)
    if port:
        env["EFFICIENTNET_PORT"] = port
    code = f"import runpy; print(runpy.run_path({str(ROOT / 'docker' / 'healthcheck.py')!r})"
    code += "['DEFAULT_URL'])"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_no_torch_in_the_serving_stages() -> None:
    for name in SERVING:
        stage = BY_NAME[name]
        for keyword, args in stage.instructions:
            lowered = args.lower()
            if keyword == "RUN" and "find_spec('torch')" in args:
                continue  # the guard that fails the build if torch is present
            assert "torch" not in lowered, f"{name}: {keyword} {args}"
            assert "[export" not in lowered, f"{name}: {keyword} {args}"
    # The runtime takes only the graph from the export stage, never its packages.
    from_export = [c for c in BY_NAME["runtime"].args_of("COPY") if "--from=export" in c]
    assert from_export == ["--from=export /opt/efficientnet/models /opt/efficientnet/models"]
    guard = " ".join(BY_NAME["runtime-build"].args_of("RUN"))
    assert "sys.exit(u.find_spec('torch') is not None)" in guard


def test_install_commands_are_the_pyproject_extras_ci_installs() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert _pip_install_args(BY_NAME["export"]) == ["./[export]"]
    assert any(dep.startswith("torch") for dep in extras["export"])
    runtime = _pip_install_args(BY_NAME["runtime-build"])
    assert runtime[0] == "."  # the project without extras: the serving dependency set
    assert not any(dep.startswith("torch") for dep in PYPROJECT["project"]["dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert "-e './[export,test,dev]'" in makefile and "-e './[export]'" in makefile


def test_export_stage_builds_the_services_default_variant() -> None:
    from service.config import DEFAULT_VARIANT as default

    assert arg_defaults(BY_NAME["export"])["VARIANT"] == default
    assert arg_defaults(BY_NAME["runtime"])["VARIANT"] == default
    runs = " ".join(BY_NAME["export"].args_of("RUN"))
    assert 'python -m model_export --variant "${VARIANT}" --weights imagenet' in runs


def test_read_only_root_filesystem_layout() -> None:
    env = _env(BY_NAME["runtime"])
    for name in ("HOME", "XDG_CACHE_HOME", "CUDA_CACHE_PATH", "EFFICIENTNET_MODEL_DIR"):
        assert env[name].startswith("/data/"), f"{name}={env[name]} is not on the /data volume"
    assert env["TMPDIR"] == "/tmp"  # a tmpfs in compose, an emptyDir in Kubernetes
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    base = " ".join(BY_NAME["base"].args_of("RUN"))
    assert "chown -R app:app /data" in base  # a fresh named volume inherits this owner
    assert "useradd --system --uid 10001" in base


def test_cuda_libraries_path_matches_the_python_of_the_base_image() -> None:
    python = re.search(r"python:(\d+\.\d+)", GLOBAL_ARGS["PYTHON_IMAGE"])
    assert python, GLOBAL_ARGS
    paths = _env(BY_NAME["runtime"])["LD_LIBRARY_PATH"].split(":")
    site = f"/opt/venv/lib/python{python.group(1)}/site-packages/nvidia"
    assert paths == [f"{site}/cu13/lib", f"{site}/cudnn/lib"]
    assert "onnxruntime-gpu[cuda,cudnn]" in " ".join(_pip_install_args(BY_NAME["runtime-build"]))


def test_no_secrets_baked_in() -> None:
    secretish = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
    for stage in STAGES:
        for keyword in ("ENV", "ARG"):
            for args in stage.args_of(keyword):
                for name in re.findall(r"(\w+)=", args) or [args.split("=")[0]]:
                    assert not secretish.search(name), f"{stage.name}: {keyword} {args}"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line.strip() and not line.startswith("#")]
    # An allow-list: everything is excluded unless named, so .env never reaches the build.
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "model_contract",
        "model_export",
        "service",
        "docker/entrypoint.sh",
        "docker/export-entrypoint.sh",
        "docker/healthcheck.py",
        "docker/pyproject_requirements.py",
    }
    copies = [a.split() for s in STAGES for a in s.args_of("COPY") if "--from" not in a]
    sources = [w for words in copies for w in words[:-1] if not w.startswith("--")]
    assert len(sources) >= 6
    for source in sources:
        assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"


@pytest.mark.slow
def test_runtime_install_resolves_without_torch(tmp_path: Path) -> None:
    """pip resolves the runtime stage's install exactly as written: onnxruntime-gpu with its
    CUDA 13 and cuDNN 9 wheels, and no torch anywhere in the tree (PyPI metadata only)."""
    report = tmp_path / "report.json"
    args = _pip_install_args(BY_NAME["runtime-build"])
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    cmd += ["--report", str(report), *args]
    done = subprocess.run(
        cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]

    installed = {
        i["metadata"]["name"].lower(): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert "torch" not in installed and "onnx" not in installed
    assert (
        installed["onnxruntime-gpu"]
        == arg_defaults(BY_NAME["runtime-build"])["ONNXRUNTIME_VERSION"]
    )
    assert installed["nvidia-cuda-runtime"].startswith("13.")
    assert installed["nvidia-cudnn-cu13"].startswith("9.")
    assert {"fastapi", "uvicorn", "pillow", "efficientnet-service"} <= installed.keys()


def test_onnxruntime_telemetry_is_off_in_every_image() -> None:
    """The images carry the opt-out model_contract/telemetry.py sets, for any process they run."""
    from model_contract.telemetry import OPT_OUT_ENV

    for name in ("export", "runtime"):
        env = _env(BY_NAME[name])
        assert {k: env.get(k) for k in OPT_OUT_ENV} == OPT_OUT_ENV, name


@pytest.mark.parametrize(("name", "extras"), [("export", ["export"]), ("runtime-build", [])])
def test_wheels_are_installed_before_the_sources_are_copied(name: str, extras: list[str]) -> None:
    """The multi-GB layer of wheels depends on pyproject.toml alone, so a code edit rebuilds
    only the project's own install (make image-test stays minutes, not a full rebuild)."""
    steps = BY_NAME[name].instructions
    wheels = next(
        i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "-r /tmp/requirements" in args
    )
    copied_before = [args.split()[0] for kw, args in steps[:wheels] if kw == "COPY"]
    assert copied_before == ["pyproject.toml", "docker/pyproject_requirements.py"]
    command = " ".join(["pyproject_requirements.py pyproject.toml", *extras]) + " >"
    assert command in steps[wheels][1]
    script, pyproject = ROOT / "docker" / "pyproject_requirements.py", ROOT / "pyproject.toml"
    printed = subprocess.run(
        [sys.executable, str(script), str(pyproject), *extras],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    project = PYPROJECT["project"]
    assert printed == project["dependencies"] + [
        dep for extra in extras for dep in project["optional-dependencies"][extra]
    ]
