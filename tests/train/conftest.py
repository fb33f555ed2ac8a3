"""One training run shared by the training tests: scikit-learn's handwritten digits rendered as
PNG class folders (benchmarks/digits.py), trained by the real command in a subprocess from
Lite0's packaged ImageNet weights, as a user runs it.

Two files the service cannot read sit among the digits, so the same run shows that they are
skipped, counted and listed."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_server import ROOT, clean_env

from benchmarks.digits import write_digits

PER_CLASS = 40  # 32 train + 8 held out per digit: ~400 images, ~10 s of features on 2 cores
NAME = "digits"
TRAIN_TIMEOUT_S = 600
JUNK = {"3/notes.txt": b"not an image\n", "7/broken.png": b"\x89PNG\r\n\x1a\n truncated"}


@dataclass(frozen=True)
class Trained:
    data: Path
    output: Path
    stdout: str
    stderr: str

    @property
    def onnx(self) -> Path:
        return self.output / f"{NAME}.onnx"

    @property
    def checkpoint(self) -> Path:
        return self.output / f"{NAME}.pth"

    @property
    def report_dir(self) -> Path:
        return self.output / f"{NAME}-report"

    def report(self) -> dict[str, Any]:
        return json.loads((self.report_dir / "report.json").read_text())


def train(*args: str, timeout: float = TRAIN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`python -m model_export train ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "model_export", "train", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_digits(tmp_path_factory.mktemp("digits") / "digits", PER_CLASS)
    for name, content in JUNK.items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture(scope="session")
def features_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by every run on the digits: the features are computed once."""
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="session")
def trained(
    digits: Path, features_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    output = tmp_path_factory.mktemp("trained") / "models"
    done = train(
        "--data", str(digits), "--variant", "lite0", "--name", NAME,
        "--output-dir", str(output), "--cache-dir", str(features_cache), "--seed", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return Trained(digits, output, done.stdout, done.stderr)
