"""One training run shared by the training tests: scikit-learn's handwritten digits rendered as
PNG class folders (benchmarks/digits.py), trained by the real command in a subprocess from
Lite0's packaged ImageNet weights, as a user runs it.

Two files the service cannot read sit among the digits, so the same run shows that they are
skipped, counted and listed."""

from __future__ import annotations

from pathlib import Path

import pytest
from digits_run import JUNK, NAME, PER_CLASS, Trained, train

from benchmarks.digits import write_digits


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
