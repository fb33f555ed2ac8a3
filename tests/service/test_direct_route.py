"""``POST /classify`` answered directly (service/api/direct.py) against the same declaration
answered by FastAPI's own dependency solver: the same requests get the same answers.

The FastAPI twin is the same app with ``DirectRoute`` handing its requests back to
``APIRoute``'s handler, so the declaration (router dependencies, ``ReadyPipeline``, ``TopK``,
the response model) is what decides there, and the direct handler's reading of it here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from service.api.direct import DirectRoute, direct
from service.api.routes import classify
from service.app import create_app
from tests.service.service_helpers import settings_for

KEY = "s3cret-key"
JPEG = {"content-type": "image/jpeg"}


@asynccontextmanager
async def _client(model: Path, *, fastapi_resolves: bool) -> AsyncIterator[httpx.AsyncClient]:
    with pytest.MonkeyPatch.context() as patch:
        if fastapi_resolves:
            patch.setattr(DirectRoute, "get_route_handler", APIRoute.get_route_handler)
        app = create_app(settings_for(model, api_key=KEY))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
                yield client


# Each rule the declaration states, and requests that pass it.
QUERIES = [
    "",
    "?top_k=2",
    "?top_k=1000",
    "?top_k=%202",
    "?top_k=3&top_k=1",
    "?top_k=",
    "?top_k=0",
    "?top_k=-4",
    "?top_k=abc",
    "?top_k=2.5",
    "?top_k=1001",
    "?other=1",
]
AUTHORIZATIONS = [None, "Bearer wrong", f"Basic {KEY}", f"bearer {KEY}", "Bearer"]


def _cases(jpeg: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """(query, headers, body)."""
    good = {**JPEG, "authorization": f"Bearer {KEY}"}
    cases = [(query, good, jpeg) for query in QUERIES]
    for authorization in AUTHORIZATIONS:
        headers = JPEG if authorization is None else {**JPEG, "authorization": authorization}
        cases.append(("", headers, jpeg))
    cases += [("?top_k=0", JPEG, jpeg), ("", good, b""), ("", good, b"not an image")]
    cases.append(("", {**good, "content-type": "text/plain"}, jpeg))
    return cases


def _comparable(response: httpx.Response) -> tuple[int, str, Any]:
    body = response.json()
    if "error" in body:
        body["error"].pop("request_id")
    else:
        body.pop("timing_ms")
    return response.status_code, response.headers["content-type"], body


async def test_direct_answers_as_fastapi_would(
    lite0_onnx: Path, photo_bytes: dict[str, bytes]
) -> None:
    cases = _cases(photo_bytes["chelsea"])
    answers: dict[bool, list[tuple[int, str, Any]]] = {}
    for fastapi_resolves in (True, False):
        async with _client(lite0_onnx, fastapi_resolves=fastapi_resolves) as client:
            answers[fastapi_resolves] = [
                _comparable(await client.post("/classify" + query, headers=headers, content=body))
                for query, headers, body in cases
            ]
    for case, answered, declared in zip(cases, answers[False], answers[True], strict=True):
        assert answered == declared, case[:2]
    statuses = {status for status, _, _ in answers[False]}
    assert statuses == {200, 400, 401, 415, 422}, "the cases reach every rule"


def test_classify_is_answered_directly(lite0_onnx: Path) -> None:
    """The route FastAPI matches for /classify is the direct one, still fully described."""
    (route,) = [r for r in classify.router.routes if getattr(r, "path", None) == "/classify"]
    assert isinstance(route, DirectRoute)
    operation = create_app(settings_for(lite0_onnx)).openapi()["paths"]["/classify"]["post"]
    assert [p["name"] for p in operation["parameters"]] == ["top_k"]
    assert operation["security"] == [{"HTTPBearer": []}, {}]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ClassifyResponse"}


async def _handler(request: Request) -> Response:
    return Response(b"{}")


async def _extra() -> None:
    return None


async def _endpoint(limit: int | None = None) -> None:
    return None


@pytest.mark.parametrize(
    ("router_dependencies", "runs", "reads", "missing"),
    [
        ([Depends(_extra)], (), ("limit",), "_extra"),  # a dependency the handler does not run
        ([], (), (), "limit"),  # a query parameter it does not read
    ],
)
def test_a_declared_input_the_handler_skips_is_refused(
    router_dependencies: list[Any], runs: tuple[Any, ...], reads: tuple[str, ...], missing: str
) -> None:
    """A dependency or parameter added to the declaration but not to the handler would be
    skipped in silence: the route refuses to be built."""
    router = APIRouter(dependencies=router_dependencies)
    route = direct(_handler, runs=runs, reads=reads)
    with pytest.raises(TypeError, match=f"does not read {missing}"):
        router.add_api_route("/x", _endpoint, methods=["POST"], route_class_override=route)
    # Once the handler reads all of it, the same declaration is accepted.
    complete = direct(_handler, runs=(_extra,), reads=("limit",))
    router.add_api_route("/x", _endpoint, methods=["POST"], route_class_override=complete)
