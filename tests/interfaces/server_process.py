"""The real service for the interface tests: ``python -m service`` with an API key.

It runs with a key, so every client under test (the OIP client, the CLI, the web page) is
exercised with authentication on, the way a deployment runs. The process itself is started and
stopped by ``tests/live_server.py``, like every other suite's live server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from live_server import ROOT, model_env, running_server

__all__ = ["API_KEY", "ROOT", "LiveServer", "serve"]

API_KEY = "interfaces-test-key"


@dataclass(frozen=True)
class LiveServer:
    url: str
    api_key: str
    model_path: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def host_port(self) -> str:  # tritonclient takes "host:port", not a URL
        return self.url.removeprefix("http://")


@contextmanager
def serve(model_path: Path, log: Path) -> Iterator[LiveServer]:
    """A ready server for ``model_path`` (with API_KEY), stopped on exit."""
    env = model_env(model_path, EFFICIENTNET_API_KEY=API_KEY)
    with running_server(env, log, "--log-level", "warning") as server:
        yield LiveServer(server.url, API_KEY, model_path)
