"""`make serve` and `make test`: what they run on a fresh machine, and that re-runs skip the
install and the export. Dry runs (`make -n`) against a scratch VENV and MODEL_DIR, so nothing
is installed here; the real install is what CI's `make test` itself does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pkg_helpers import ROOT, clean_env, run_make

PYPROJECT = ROOT / "pyproject.toml"


def _dry_run(target: str, venv: Path, models: Path, **env: str) -> list[str]:
    done = run_make("-n", target, f"VENV={venv}", f"MODEL_DIR={models}", env=clean_env(**env))
    assert done.returncode == 0, done.stderr
    return done.stdout.replace("\\\n", " ").splitlines()  # join continued recipe lines


def _index(lines: list[str], needle: str) -> int:
    hits = [i for i, line in enumerate(lines) if needle in line]
    assert hits, f"{needle!r} not in:\n" + "\n".join(lines)
    return hits[0]


def _installed(venv: Path) -> None:
    """Make `venv` look like a finished install: interpreter present, stamps newer than
    pyproject.toml."""
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    newer = PYPROJECT.stat().st_mtime + 60
    for stamp in (".installed-serve", ".installed-test"):
        (venv / stamp).touch()
        os.utime(venv / stamp, (newer, newer))


def test_serve_on_a_fresh_machine_creates_venv_installs_exports_and_serves(
    tmp_path: Path,
) -> None:
    env = {k: "" for k in ("EFFICIENTNET_VARIANT", "EFFICIENTNET_MODEL_DIR")}
    lines = _dry_run("serve", tmp_path / "venv", tmp_path / "models", **env)

    steps = [
        _index(lines, "-m venv"),
        _index(lines, "pip install"),
        _index(lines, "-m model_export --variant lite0 --weights imagenet"),
        _index(lines, "-m service --host 0.0.0.0 --port 8000"),
    ]
    assert steps == sorted(steps), "serve must create, install, export, then start"
    assert "'./[export]'" in lines[steps[1]], "serve installs the same extra as the image"
    assert f"--output-dir {tmp_path / 'models'}" in lines[steps[2]]
    assert "EFFICIENTNET_VARIANT=lite0" in lines[steps[3]]


def test_serve_rerun_skips_install_and_export(tmp_path: Path) -> None:
    venv, models = tmp_path / "venv", tmp_path / "models"
    _installed(venv)
    models.mkdir()
    (models / "efficientnet_lite0.onnx").touch()

    lines = _dry_run("serve", venv, models, EFFICIENTNET_VARIANT="")

    assert not any("pip install" in line or "model_export" in line for line in lines), lines
    _index(lines, "-m service --host 0.0.0.0 --port 8000")


def test_dependency_change_reinstalls_but_keeps_the_graph(tmp_path: Path) -> None:
    venv, models = tmp_path / "venv", tmp_path / "models"
    _installed(venv)
    older = PYPROJECT.stat().st_mtime - 60
    os.utime(venv / ".installed-serve", (older, older))
    models.mkdir()
    (models / "efficientnet_lite0.onnx").touch()

    lines = _dry_run("serve", venv, models, EFFICIENTNET_VARIANT="")

    _index(lines, "pip install")
    assert not any("model_export" in line for line in lines), "a graph must not be re-exported"


@pytest.mark.parametrize("how", ["env", "make-variable"])
def test_variant_is_configuration(how: str, tmp_path: Path) -> None:
    venv, models = tmp_path / "venv", tmp_path / "models"
    _installed(venv)
    if how == "env":
        lines = _dry_run("serve", venv, models, EFFICIENTNET_VARIANT="b3")
    else:
        done = run_make("-n", "serve", f"VENV={venv}", f"MODEL_DIR={models}", "VARIANT=b3")
        lines = done.stdout.replace("\\\n", " ").splitlines()
    _index(lines, "-m model_export --variant b3 ")
    assert "EFFICIENTNET_VARIANT=b3" in lines[_index(lines, "-m service")]


def test_test_installs_everything_ci_needs_then_runs_the_whole_suite(tmp_path: Path) -> None:
    lines = _dry_run("test", tmp_path / "venv", tmp_path / "models")
    install = _index(lines, "pip install")
    assert "'./[export,test,dev]'" in lines[install]
    run = _index(lines, "-m pytest")
    assert install < run
    assert lines[run].rstrip().endswith("-m pytest"), "the whole suite, no selection"


def test_test_rerun_skips_the_install(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _installed(venv)
    lines = _dry_run("test", venv, tmp_path / "models")
    assert not any("pip install" in line for line in lines), lines
    _index(lines, "-m pytest")


def test_pip_noise_filter_keeps_pip_failures() -> None:
    # The filter sits in a pipe; with pipefail the recipe fails when pip fails.
    makefile = (ROOT / "Makefile").read_text()
    assert ".SHELLFLAGS := -euo pipefail -c" in makefile
    assert "$(PIP_INSTALL) -e './[export]' $(PIP_FILTER)" in makefile


def test_help_lists_the_two_commands() -> None:
    done = run_make("help")
    assert done.returncode == 0
    targets = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"serve", "test", "lint", "export"} <= targets


def test_test_installs_chromium_for_the_page_tests_only_when_missing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _installed(venv)
    missing = tmp_path / "no" / "chromium"
    lines = _dry_run("test", venv, tmp_path / "models", CHROMIUM=str(missing))
    install = _index(lines, "apt-get install -y -qq --no-install-recommends chromium")
    assert install < _index(lines, "-m pytest")

    present = tmp_path / "chromium"
    present.touch()
    lines = _dry_run("test", venv, tmp_path / "models", CHROMIUM=str(present))
    assert not any("apt-get" in line for line in lines), lines
