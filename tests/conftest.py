"""Shared fixtures: exported ONNX graphs and real photographs.

Graphs are exported by the real CLI in a subprocess (test processes stay torch-free) into
pytest's cache, keyed by a hash of model_export's sources and the exporter's library
versions: repeated local runs reuse them, and any change to the exporter exports afresh,
so a stale graph is never served.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from photos import Photo, write_photos  # tests/ is on sys.path (conftest rootdir)

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = ROOT / "model_export"
EXPORT_TIMEOUT_S = 300


def _exporter_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(EXPORTER.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".txt", ".json"}:
            digest.update(path.relative_to(EXPORTER).as_posix().encode())
            digest.update(path.read_bytes())
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime-gpu"):
        digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
    return digest.hexdigest()[:16]


def _cache_root(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is None:
        return tmp_path_factory.mktemp("onnx")
    return Path(cache.mkdir("efficientnet-onnx"))


def export_onnx(
    config: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
    variant: str,
    *args: str,
) -> Path:
    """Path to `efficientnet_<variant>.onnx` exported with CLI `args` (cached by key)."""
    key = "-".join([variant, *(a.strip("-").replace("/", "_") for a in args), _exporter_key()])
    final = _cache_root(config, tmp_path_factory) / key
    path = final / f"efficientnet_{variant}.onnx"
    if path.is_file():
        return path
    staging = final.with_name(f"{key}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [sys.executable, "-m", "model_export", "--variant", variant, *args]
    cmd += ["--output-dir", str(staging)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    try:
        staging.rename(final)  # atomic: a cached directory always holds a checked graph
    except OSError:  # a concurrent worker won the race; its graph is equally valid
        shutil.rmtree(staging, ignore_errors=True)
    return path


@pytest.fixture(scope="session")
def lite0_onnx(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0 with its packaged ImageNet weights (works offline)."""
    return export_onnx(pytestconfig, tmp_path_factory, "lite0", "--weights", "imagenet")


@pytest.fixture(scope="session")
def b0_random_onnx(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-B0 with random weights, seed 0 (for shape/plumbing tests, not accuracy)."""
    return export_onnx(pytestconfig, tmp_path_factory, "b0", "--weights", "random", "--seed", "0")


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Photo]:
    """Real photos as JPEG files: chelsea (cat), coffee, rocket, motorcycle."""
    return write_photos(tmp_path_factory.mktemp("photos"))
