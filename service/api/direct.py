"""``DirectRoute``: a route that FastAPI describes but does not resolve per request.

FastAPI solves a route's dependencies and validates its response model again on every request.
For ``POST /classify`` under load that was 0.07–0.10 ms of the event loop's ~0.7 ms per web photo
(BENCHMARKS.md, "A route FastAPI describes but does not resolve"), CPU taken from decoding and
inference on a small machine. A DirectRoute keeps the whole declaration (its parameters, its
security scheme and its response model in the OpenAPI document) and answers with a handler that
reads the same inputs itself, through the same functions, and raises the same errors.
``tests/service/test_direct_route.py`` sends the same requests to both ways of answering.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]


class DirectRoute(APIRoute):
    """An APIRoute whose requests go to ``handler``, not to FastAPI's dependency solver."""

    handler: ClassVar[Handler]

    def get_route_handler(self) -> Handler:
        # FastAPI still wraps it: the app's exception handlers answer what it raises.
        return type(self).handler


def direct(handler: Handler) -> type[DirectRoute]:
    """The route class (``route_class_override``) that answers with ``handler``."""
    return type(f"Direct_{handler.__name__}", (DirectRoute,), {"handler": staticmethod(handler)})


def query_value(request: Request, name: str, adapter: TypeAdapter[Any]) -> Any:
    """Query parameter ``name`` (absent: None) validated by ``adapter``, built from the same
    annotation the declaration uses; a bad value is FastAPI's own 422 (``query.<name>: ...``)."""
    raw = request.query_params.get(name)
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", name, *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def json_answer(model: BaseModel) -> Response:
    """The response model as FastAPI would send it, serialised once."""
    return Response(model.model_dump_json(), media_type="application/json")
