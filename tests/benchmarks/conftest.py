"""Benchmark smoke tests: the harness runs end to end on tiny settings (no timing asserts)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# benchmarks/ is not part of the installed package (it must not ship in the serving image):
# import it from the checkout, whichever way pytest was started.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def bench_models(
    tmp_path_factory: pytest.TempPathFactory, b0_random_onnx: Path, lite0_onnx: Path
) -> Path:
    """A models dir laid out as benchmarks.models expects, filled from the shared exports
    (so the benchmarks reuse them instead of exporting again)."""
    from benchmarks.models import exporter_key

    root = tmp_path_factory.mktemp("bench-models")
    for name, source in (("b0-random", b0_random_onnx), ("lite0-imagenet", lite0_onnx)):
        (root / f"{name}-{exporter_key()}").mkdir()
        shutil.copy(source, root / f"{name}-{exporter_key()}" / source.name)
    return root
