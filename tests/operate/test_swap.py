"""A model swap without downtime, against the real ``python -m service``: under steady load from
the project's load generator, Lite0 (ImageNet) is swapped for a 5-class model trained by the
real ``model_export train`` and back, through the Open Inference Protocol's repository
extension and through SIGHUP. No request fails, every answer comes from one model, and bad
files are refused while the model in service keeps answering.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from live_server import ROOT, Server, clean_env, descendants, running_server, with_metadata
from photos import Photo

from benchmarks.digits import write_digits

pytestmark = pytest.mark.slow

FIVE = "digits5"  # the 5-class model's name: its file is digits5.onnx
LITE0 = "efficientnet_lite0"
TRAIN_TIMEOUT_S = 600
SWAP_TIMEOUT_S = 120


@dataclass(frozen=True)
class Models:
    directory: Path  # EFFICIENTNET_MODEL_DIR: efficientnet_lite0.onnx and digits5.onnx
    lite0: Path
    five: Path
    five_labels: frozenset[str]


@pytest.fixture(scope="module")
def models(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Lite0 with its ImageNet head, and a head for digits 0-4 trained on Lite0's features."""
    work = tmp_path_factory.mktemp("swap")
    data = write_digits(work / "data", 16)
    for digit in range(5, 10):
        shutil.rmtree(data / str(digit))
    directory = work / "models"
    directory.mkdir()
    shutil.copy(lite0_onnx, directory / f"{LITE0}.onnx")
    cmd = [
        sys.executable, "-m", "model_export", "train", "--data", str(data), "--variant",
        "lite0", "--name", FIVE, "--output-dir", str(directory), "--seed", "0",
    ]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-4000:]
    labels = frozenset(str(d) for d in range(5))
    return Models(directory, directory / f"{LITE0}.onnx", directory / f"{FIVE}.onnx", labels)


def _env(models: Models, **overrides: str) -> dict[str, str]:
    return clean_env(
        EFFICIENTNET_MODEL_DIR=str(models.directory), EFFICIENTNET_VARIANT="lite0", **overrides
    )


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("swap-server") / "server.log"
    with running_server(_env(models), log) as server:
        yield server


def _load(server: Server, name: str) -> httpx.Response:
    url = f"{server.url}/v2/repository/models/{name}/load"
    return httpx.post(url, timeout=SWAP_TIMEOUT_S)


def _served(server: Server) -> str:
    return httpx.get(f"{server.url}/metadata", timeout=10).json()["name"]


def _labels(server: Server, photo: Photo) -> list[str]:
    response = httpx.post(
        f"{server.url}/classify", files={"file": photo.path.read_bytes()}, timeout=30
    )
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


def _start_load(server: Server, photos: dict[str, Photo], seconds: float) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "benchmarks.loadgen", "--url", f"{server.url}/classify",
        *(arg for p in photos.values() for arg in ("--file", str(p.path))),
        "--concurrency", "6", "--requests", "100000", "--max-seconds", str(seconds),
        "--answers",
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, text=True)


def test_swap_under_load_drops_nothing_and_never_mixes_models(
    server: Server, models: Models, photos: dict[str, Photo]
) -> None:
    assert _served(server) == LITE0
    load = _start_load(server, photos, seconds=24)
    time.sleep(4)  # steady load first
    there = _load(server, FIVE)
    time.sleep(6)
    back = _load(server, LITE0)
    stdout, _ = load.communicate(timeout=120)
    result = json.loads(stdout)
    assert there.status_code == 200, there.text
    assert back.status_code == 200, back.text
    assert there.json()["replaced"] == LITE0 and there.json()["name"] == FIVE
    # Zero failed requests, and enough of them to have crossed both swaps.
    assert result["statuses"] == {"200": result["count"]}, result["first_error"]
    assert result["count"] >= 60, result
    # Every answer entirely from one model: five digit labels, or five ImageNet ones.
    answers = [frozenset(a) for a in result["answers"]]
    print(f"{result['count']} answered at {result['throughput']:.1f}/s across two swaps")
    from_five = [a for a in answers if a <= models.five_labels]
    from_lite0 = [a for a in answers if not a & models.five_labels]
    assert len(from_five) + len(from_lite0) == len(answers), "an answer mixed the two models"
    assert all(len(a) == 5 for a in answers)
    assert from_five and len(from_lite0) > len(from_five) / 4, (len(from_five), len(from_lite0))
    assert _served(server) == LITE0
    # The swaps' timings are in the log, and the old model was retired each time.
    log = server.log_text()
    assert f"swapped {LITE0} for {FIVE}: loaded and checked in" in log, log[-3000:]
    assert f"swapped {FIVE} for {LITE0}: loaded and checked in" in log, log[-3000:]
    assert f"retired {FIVE} after" in log, log[-3000:]


def test_everything_follows_the_swap(
    server: Server, models: Models, photos: dict[str, Photo]
) -> None:
    assert _load(server, FIVE).status_code == 200
    try:
        assert _served(server) == FIVE
        assert set(_labels(server, photos["chelsea"])) == models.five_labels
        meta = httpx.get(f"{server.url}/v2/models/{FIVE}", timeout=10)
        assert meta.status_code == 200, meta.text
        assert meta.json()["outputs"][0]["shape"] == [-1, 5]
        assert httpx.get(f"{server.url}/v2/models/{LITE0}", timeout=10).status_code == 404
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        sha = _sha256(models.five)
        assert f'sha256="{sha}"' in metrics, [m for m in metrics.splitlines() if "model_info" in m]
        index = httpx.post(f"{server.url}/v2/repository/index", timeout=10).json()
        assert {"name": FIVE, "version": "1", "state": "READY"} in index
        assert {"name": LITE0, "state": "UNAVAILABLE", "reason": "not loaded"} in index
    finally:
        assert _load(server, LITE0).status_code == 200
    top1 = httpx.post(
        f"{server.url}/classify", files={"file": photos["chelsea"].path.read_bytes()}, timeout=30
    ).json()["predictions"][0]["index"]
    assert top1 in photos["chelsea"].expected


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("name", "status", "phrase"),
    [
        ("truncated", 400, "cannot load ONNX model"),
        ("nometa", 400, "metadata"),
        ("renamed", 400, f"holds model '{FIVE}', not 'renamed'"),
        ("absent", 404, "does not exist"),
        ("bad..name!", 400, "not a model name"),
    ],
)
def test_a_bad_file_is_refused_and_the_model_in_service_keeps_answering(
    server: Server, models: Models, photos: dict[str, Photo], name: str, status: int, phrase: str
) -> None:
    target = models.directory / f"{name}.onnx"
    if name == "truncated":
        data = models.five.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif name == "nometa":
        with_metadata(models.five, target, None)
    elif name == "renamed":
        shutil.copy(models.five, target)
    try:
        response = _load(server, name)
    finally:
        target.unlink(missing_ok=True)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"], response.text
    assert _served(server) == LITE0
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    top1 = httpx.post(
        f"{server.url}/classify", files={"file": photos["coffee"].path.read_bytes()}, timeout=30
    ).json()["predictions"][0]["index"]
    assert top1 in photos["coffee"].expected


def test_unload_is_refused_with_the_reason(server: Server) -> None:
    response = httpx.post(f"{server.url}/v2/repository/models/{LITE0}/unload", timeout=10)
    assert response.status_code == 400
    assert "serves exactly one model" in response.json()["error"]
    assert _served(server) == LITE0


def test_swaps_give_the_old_models_memory_back(server: Server, models: Models) -> None:
    """Back and forth: the old session and its decode workers go each time, so the server's
    memory and its process count stay where the first round left them."""

    def swap_round() -> None:
        retired = server.log_text().count("retired ")
        for name in (FIVE, LITE0):
            assert _load(server, name).status_code == 200
        deadline = time.monotonic() + 30
        while server.log_text().count("retired ") < retired + 2:
            assert time.monotonic() < deadline, server.log_text()[-3000:]
            time.sleep(0.2)

    swap_round()
    workers = len(descendants(server.pid))
    rss_mb = [server.rss_kb() / 1024]
    for _ in range(6):
        swap_round()
        rss_mb.append(server.rss_kb() / 1024)
    model_mb = models.lite0.stat().st_size / 2**20
    print("RSS after each round (MB):", [round(r) for r in rss_mb])
    assert len(descendants(server.pid)) == workers
    # The allocators settle over the first rounds (onnxruntime's arenas and glibc's heaps take
    # +30-60 MB here, then stay); models that stayed would add two each round, so the last
    # three rounds would grow by six models' weights at least: half of that is the bound (the
    # settled rounds here moved 0-17 MB).
    late_growth = rss_mb[-1] - rss_mb[-4]
    assert late_growth < 3 * model_mb, (rss_mb, model_mb)


def test_sighup_swaps_in_the_file_now_at_the_configured_path(
    models: Models, photos: dict[str, Photo], tmp_path: Path
) -> None:
    configured = tmp_path / "model.onnx"
    shutil.copy(models.lite0, configured)
    env = _env(models, EFFICIENTNET_MODEL_PATH=str(configured))
    del env["EFFICIENTNET_VARIANT"]
    with running_server(env, tmp_path / "server.log") as server:
        for source, expected in ((models.five, FIVE), (models.lite0, LITE0)):
            staged = tmp_path / "staged.onnx"
            shutil.copy(source, staged)
            staged.replace(configured)  # atomically, as a deployment replaces a file
            server.process.send_signal(signal.SIGHUP)
            _wait_served(server, expected)
        configured.write_bytes(b"not a model")
        server.process.send_signal(signal.SIGHUP)
        _wait_log(server, "SIGHUP: model not swapped")
        assert _served(server) == LITE0
        assert set(_labels(server, photos["rocket"])).isdisjoint(models.five_labels)


def _wait_served(server: Server, name: str) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while _served(server) != name:
        assert time.monotonic() < deadline, server.log_text()[-3000:]
        time.sleep(0.2)


def _wait_log(server: Server, phrase: str) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while phrase not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()[-3000:]
        time.sleep(0.2)
