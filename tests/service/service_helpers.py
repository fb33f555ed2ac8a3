"""Service test helpers: the real app over real exported graphs, in-process (httpx ASGITransport
with the lifespan run) or over loopback HTTP (uvicorn in a thread).

A module of its own, not conftest: ``from conftest import`` is ambiguous once another test
directory's conftest was imported first in the same run."""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from service.app import create_app
from service.config import Settings
from service.edge.server import Server, uvicorn_config

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60


class _ExplicitSettings(Settings):
    """Settings from arguments only: a developer's exported EFFICIENTNET_* must not leak in."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, **_: Any) -> Any:
        return (init_settings,)


def settings_for(model: Path, **overrides: Any) -> Settings:
    variant = model.stem.removeprefix("efficientnet_")
    values: dict[str, Any] = {"model_path": model, "variant": variant, "device": "cpu"}
    return _ExplicitSettings(**{**values, **overrides})


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (load, warm up, drain) and an httpx client bound to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """uvicorn serving the app on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    # The service's own uvicorn settings and protocol (header timeout, lingering close).
    config = uvicorn_config(
        create_app(settings), settings, host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(READY_TIMEOUT_S * 100):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def top1(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["index"]


def scores(response: httpx.Response) -> dict[int, float]:
    assert response.status_code == 200, response.text
    return {p["index"]: p["score"] for p in response.json()["predictions"]}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "request_id"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    # The body names the request the answer's header names.
    assert body["error"]["request_id"] == response.headers["x-request-id"], body
    return body["error"]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return sample.value
    return 0.0


def ready_wait(url: str) -> None:
    with httpx.Client() as client:
        for _ in range(READY_TIMEOUT_S * 10):
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            threading.Event().wait(0.1)
    raise AssertionError(f"{url} never became ready")
