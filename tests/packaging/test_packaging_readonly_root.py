"""The service runs on a read-only root filesystem, writing only to its data volume.

The container (docker-compose `read_only: true`, Kubernetes `readOnlyRootFilesystem`) gives the
server one writable volume for models and caches. No Docker engine runs here, so the same
condition is built with a private mount namespace: `/` remounted read-only, one writable
folder standing in for `/data`, and the real `python -m service` classifying a real photo there.
If the service (or a library under it) wrote anywhere else, it would fail to start or answer.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_server import model_env, running_server
from PIL import Image

# Bind the data folder onto itself first (its own mount stays writable), then make `/`
# read-only, then exec the server so its pid is the one the test signals.
READ_ONLY_ROOT = (
    'mount --make-rprivate / && mount --bind "$1" "$1" && mount -o remount,bind,ro / '
    '&& shift && exec "$@"'
)


@pytest.fixture
def data_volume(tmp_path: Path, lite0_onnx: Path) -> Path:
    data = tmp_path / "data"
    for sub in ("models", "home", "cache", "tmp"):
        (data / sub).mkdir(parents=True)
    shutil.copy(lite0_onnx, data / "models" / lite0_onnx.name)
    return data


def test_serves_with_a_read_only_root(data_volume: Path, tmp_path: Path, photos: dict) -> None:
    assert os.geteuid() == 0, "making / read-only in a mount namespace needs root (CI runs as root)"
    env = model_env(
        data_volume / "models" / "efficientnet_lite0.onnx",
        EFFICIENTNET_MODEL_DIR=str(data_volume / "models"),
        HOME=str(data_volume / "home"),
        XDG_CACHE_HOME=str(data_volume / "cache"),
        TMPDIR=str(data_volume / "tmp"),
    )
    launcher = [
        "unshare",
        "--mount",
        "bash",
        "-c",
        READ_ONLY_ROOT,
        "read-only-root",
        str(data_volume),
    ]
    with running_server(env, tmp_path / "server.log", launcher=launcher) as server:
        # Proof the namespace is what it claims: the server's root is mounted read-only.
        mounts = Path(f"/proc/{server.pid}/mounts").read_text().splitlines()
        root_options = next(line.split()[3] for line in mounts if line.split()[1] == "/")
        assert root_options.split(",")[0] == "ro", root_options
        photo = photos["chelsea"]
        response = httpx.post(
            f"{server.url}/classify",
            files={"file": (photo.path.name, photo.path.read_bytes(), "image/jpeg")},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["index"] in photo.expected
        # Over a megabyte, a file of a batch upload is spooled to TMPDIR: the one scratch place.
        noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
        big = io.BytesIO()
        Image.fromarray(noise).save(big, "PNG")
        assert big.tell() > 2**20
        response = httpx.post(
            f"{server.url}/classify/batch",
            files=[("file", ("noise.png", big.getvalue()))],
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["status_code"] == 200, response.text
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200
