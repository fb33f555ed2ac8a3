"""`make serve` and `make test`: what they run on a fresh machine, and that re-runs skip the
install and the export. Dry runs (`make -n`) against a scratch VENV and MODEL_DIR, so nothing
is installed here; the real install is what CI's `make test` itself does. PyTorch's index is a
stand-in on 127.0.0.1 (tests/packaging/test_torch_index.py has the probe itself), so the
install line shown is the one this Makefile would run with the index reachable or not."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from live_server import free_port
from pkg_helpers import ROOT, VENV, clean_env, run_make
from torch_index_helpers import closed_port_url, stand_in_index

PYPROJECT = ROOT / "pyproject.toml"


def _dry_run(
    target: str, venv: Path, models: Path, *args: str, torch_index: str = "", **env: str
) -> list[str]:
    # An unreachable PyTorch index unless a test serves one: no real network in these tests.
    index = f"TORCH_INDEX={torch_index or closed_port_url()}"
    done = run_make(
        "-n", target, f"VENV={venv}", f"MODEL_DIR={models}", index, *args, env=clean_env(**env)
    )
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
        _index(lines, "-m service --host 127.0.0.1 --port 8000"),
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
    _index(lines, "-m service --host 127.0.0.1 --port 8000")


def test_serve_binds_all_interfaces_only_when_asked(tmp_path: Path) -> None:
    venv, models = tmp_path / "venv", tmp_path / "models"
    _installed(venv)
    models.mkdir()
    (models / "efficientnet_lite0.onnx").touch()
    lines = _dry_run("serve", venv, models, "HOST=0.0.0.0", EFFICIENTNET_VARIANT="")
    _index(lines, "-m service --host 0.0.0.0 --port 8000")


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of LISTEN sockets on `port`, from the kernel's tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                found.add(address)
    return found


def test_make_serve_really_listens_on_loopback_only(lite0_onnx: Path, tmp_path: Path) -> None:
    """`make serve` itself (installed venv, exported graph): the socket is 127.0.0.1's."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "efficientnet_lite0.onnx").symlink_to(lite0_onnx)
    port = free_port()
    # -o: treat the install stamp as up to date, whatever pyproject.toml's time (no pip here).
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "serve", f"VENV={VENV}",
           f"MODEL_DIR={models}", f"PORT={port}", "-o", f"{VENV}/.installed-serve"]  # fmt: skip
    env = clean_env(EFFICIENTNET_VARIANT="", EFFICIENTNET_LOG_LEVEL="warning")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        # 0100007F is 127.0.0.1 in the kernel's byte order; 00000000 would be 0.0.0.0.
        assert _listening_addresses(port) == {"0100007F"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


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


def test_train_then_serve_the_trained_file(tmp_path: Path) -> None:
    """`make train DATA=... NAME=...` runs the training command into MODEL_DIR; with
    EFFICIENTNET_MODEL_PATH, `make serve` serves that file: no VARIANT graph is exported and
    no VARIANT is passed (the file names its own)."""
    venv, models = tmp_path / "venv", tmp_path / "models"
    _installed(venv)
    lines = _dry_run("train", venv, models, "DATA=photos/", "NAME=parts", "VARIANT=lite1")
    command = lines[_index(lines, "-m model_export train")]
    assert "--data photos/ --variant lite1" in command and "--name parts" in command
    assert f"--output-dir {models}" in command
    trained = models / "parts.onnx"
    models.mkdir()
    trained.touch()
    lines = _dry_run("serve", venv, models, EFFICIENTNET_MODEL_PATH=str(trained))
    assert not any("model_export" in line for line in lines), "no graph is exported"
    serve = lines[_index(lines, "-m service")]
    assert f"EFFICIENTNET_MODEL_PATH={trained}" in serve and "EFFICIENTNET_VARIANT" not in serve
    refused = run_make("train", f"VENV={venv}", env=clean_env())
    assert refused.returncode != 0 and "make train DATA=folder" in refused.stderr


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


def test_pip_shows_progress_and_its_failures(tmp_path: Path) -> None:
    lines = _dry_run("serve", tmp_path / "venv", tmp_path / "models")
    install = lines[_index(lines, "pip install")]
    assert "--quiet" not in install and "--progress-bar on" in install
    # The noise filter reads stderr only (a process substitution, not a pipe): stdout stays
    # the terminal for pip's progress bars, and the recipe's exit status is pip's own.
    assert '2> >(grep -v -e "is ignored' in install and "| " not in install
    pip = (
        "import sys; print('Location x is ignored: it is neither a file nor a directory.',"
        " file=sys.stderr); print('ERROR: no matching distribution', file=sys.stderr); exit(3)"
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f'python3 -c "{pip}" {_filter()}'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 3, "a failing pip must fail the recipe"
    assert "ERROR: no matching distribution" in done.stderr and "is ignored" not in done.stderr


def _filter() -> str:
    done = run_make("-p", "-n", "help")
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("PIP_FILTER = ")]
    return line.removeprefix("PIP_FILTER = ")


@pytest.mark.parametrize("target", ["serve", "test"])
def test_install_takes_pytorchs_cpu_wheels_when_their_index_answers(
    target: str, tmp_path: Path
) -> None:
    with stand_in_index() as url:
        lines = _dry_run(target, tmp_path / "venv", tmp_path / "models", torch_index=url)
    install = lines[_index(lines, "pip install")]
    assert f"--extra-index-url {url} -e" in install


@pytest.mark.parametrize("target", ["serve", "test"])
def test_install_falls_back_to_the_default_index_at_once(target: str, tmp_path: Path) -> None:
    started = time.monotonic()
    lines = _dry_run(target, tmp_path / "venv", tmp_path / "models")  # a closed port
    assert time.monotonic() - started < 20, "the probe must not wait out pip's timeouts"
    install = lines[_index(lines, "pip install")]
    assert "--extra-index-url" not in install and "-e './[export" in install


def test_help_lists_the_two_commands_and_the_client() -> None:
    done = run_make("help")
    assert done.returncode == 0
    targets = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"serve", "test", "lint", "export"} <= targets
    assert "bin/efficientnet-classify photo.jpg" in done.stdout
    assert "127.0.0.1:8000" in done.stdout


def test_test_installs_chromium_for_the_page_tests_only_when_missing(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _installed(venv)
    missing = tmp_path / "no" / "chromium"
    lines = _dry_run("test", venv, tmp_path / "models", CHROMIUM=str(missing))
    install = _index(lines, "install --no-install-recommends chromium")
    assert install < _index(lines, "-m pytest")
    # apt-get's and dpkg's chatter goes to a log, shown when the install fails.
    assert "NEEDRESTART_SUSPEND=1 apt-get -y -qq" in lines[install]
    assert '>"$log" 2>&1' in lines[install] and 'tail -n 40 "$log" >&2' in lines[install]

    present = tmp_path / "chromium"
    present.touch()
    lines = _dry_run("test", venv, tmp_path / "models", CHROMIUM=str(present))
    assert not any("apt-get" in line for line in lines), lines
