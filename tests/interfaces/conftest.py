"""One real service for all interface tests (see server_process.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import LiveServer, serve


@pytest.fixture(scope="session")
def live_server(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Lite0 with ImageNet weights and an API key, on 127.0.0.1 at a free port."""
    with serve(lite0_onnx, tmp_path_factory.mktemp("server") / "server.log") as server:
        yield server
