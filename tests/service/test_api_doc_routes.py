"""docs/api.md's route table is the app's: every route registered is documented, nothing else is,
and its *key* column says which routes refuse a request without the API key.

Read from the app at test time, so a route added without its row fails here until documented.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fastapi.routing
import httpx
import pytest
from fastapi.routing import APIRoute
from service_helpers import ROOT, in_process, settings_for

from service.app import create_app

API_DOC = ROOT / "docs" / "api.md"
ROW = re.compile(r"^\| `([A-Z]+) (/[^`]*)` \| (key|–) \|", re.M)
# Values for path parameters, so each documented route can be requested as it is written.
PATH_PARAMS = {"model_name": "efficientnet_lite0", "model_version": "1", "name": "app.js"}
API_KEY = "route-table-key"


def documented() -> dict[tuple[str, str], bool]:
    """(method, path) → needs the key, from the table under docs/api.md's "## Routes"."""
    text = API_DOC.read_text()
    section = text.split("\n## Routes\n", 1)[1].split("\n## ", 1)[0]
    rows = ROW.findall(section)
    assert rows, "no route rows under '## Routes' in docs/api.md"
    table = {(method, path): key == "key" for method, path, key in rows}
    assert len(table) == len(rows), "a route is listed twice"
    return table


def _route_contexts(routes: list) -> Iterator:
    # FastAPI ≥ 0.123 keeps included routers as lazy entries; iter_route_contexts flattens them.
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    return iter(iterate(routes)) if iterate else iter(routes)


def registered(app: fastapi.FastAPI) -> set[tuple[str, str]]:
    """(method, path) for every route the app answers; Starlette's implicit HEAD for a plain
    GET route (the docs pages) is not listed, an explicitly registered HEAD is."""
    pairs = set()
    for route in _route_contexts(app.routes):
        methods = set(route.methods or ())
        original = getattr(route, "original_route", route)
        if not isinstance(original, APIRoute) and "GET" in methods:
            methods.discard("HEAD")
        pairs |= {(method, route.path) for method in methods}
    return pairs


def test_the_table_lists_every_route_the_app_registers(lite0_onnx: Path) -> None:
    app = create_app(settings_for(lite0_onnx))
    routes, table = registered(app), set(documented())
    assert routes - table == set(), f"registered but not in docs/api.md: {sorted(routes - table)}"
    assert table - routes == set(), f"in docs/api.md but not registered: {sorted(table - routes)}"
    assert ("POST", "/v2/models/{model_name}/infer") in routes  # the flattening found /v2


@pytest.fixture(scope="module")
async def keyed(lite0_onnx: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(settings_for(lite0_onnx, api_key=API_KEY)) as client:
        yield client


async def test_the_key_column_is_what_the_app_enforces(keyed: httpx.AsyncClient) -> None:
    wrong = []
    for (method, path), needs_key in documented().items():
        url = path.format(**PATH_PARAMS)
        status = (await keyed.request(method, url)).status_code
        if (status == 401) != needs_key:
            wrong.append(f"{method} {path}: {status} without a key, table says key={needs_key}")
        if needs_key:  # and the key is what lets it through
            authed = await keyed.request(
                method, url, headers={"Authorization": f"Bearer {API_KEY}"}
            )
            assert authed.status_code != 401, f"{method} {path} refuses the right key"
    assert wrong == []
