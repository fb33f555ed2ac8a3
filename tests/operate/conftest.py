"""One real service scraped by one real Prometheus for every test of tests/operate/ (scrape.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import model_env, running_server
from scrape import Scrape, running_prometheus, traffic, wait_for_samples


@pytest.fixture(scope="session")
def scrape(
    lite0_onnx: Path, photos: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scrape]:
    """A service that has answered photos and refusals, scraped by a real Prometheus."""
    tmp = tmp_path_factory.mktemp("prometheus")
    photo = photos["chelsea"].path.read_bytes()
    with running_server(model_env(lite0_onnx), tmp / "service.log") as server:
        traffic(server, photo)
        with running_prometheus(server, tmp) as url:
            wait_for_samples(url, server, photo)
            yield Scrape(prometheus=url, server=server)


@pytest.fixture
def scraped(scrape: Scrape) -> str:
    """The URL of the Prometheus scraping the service."""
    return scrape.prometheus
