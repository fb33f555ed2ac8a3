"""Fixtures for the service tests (helpers: service_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from service_helpers import in_process, settings_for


@pytest.fixture(scope="session")
async def lite0(lite0_onnx: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The packaged ImageNet Lite0 with default (CPU-measured) batching, in-process."""
    async with in_process(settings_for(lite0_onnx)) as client:
        yield client


@pytest.fixture(scope="session")
def photo_bytes(photos: dict[str, Any]) -> dict[str, bytes]:
    return {name: photo.path.read_bytes() for name, photo in photos.items()}


@pytest.fixture(scope="session")
def chelsea(photos: dict[str, Any]) -> Image.Image:
    return Image.open(photos["chelsea"].path).convert("RGB")
