"""Fixtures for the reliability suite: one shared real server (``python -m service``) over the
packaged ImageNet Lite0 graph, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import Server, model_env, running_server
from reliability_helpers import API_KEY, REQUEST_TIMEOUT_S


@pytest.fixture(scope="session")
def served(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with its default limits (20 MiB body, 50 MP images), access log on."""
    env = model_env(lite0_onnx, EFFICIENTNET_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S))
    log = tmp_path_factory.mktemp("served") / "server.log"
    with running_server(env, log, "--access-log") as server:
        yield server


@pytest.fixture(scope="session")
def keyed(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with an API key, as deployed (for schemathesis' auth checks)."""
    env = model_env(
        lite0_onnx,
        EFFICIENTNET_API_KEY=API_KEY,
        EFFICIENTNET_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
    )
    with running_server(env, tmp_path_factory.mktemp("keyed") / "server.log") as server:
        yield server
