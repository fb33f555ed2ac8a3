"""``DirectRoute``: a route that FastAPI describes but does not resolve per request.

FastAPI solves a route's dependencies and validates its response model again on every request.
For ``POST /classify`` under load that was 0.07–0.10 ms of the event loop's ~0.7 ms per web photo
(BENCHMARKS.md, "A route FastAPI describes but does not resolve"), CPU taken from decoding and
inference on a small machine. A DirectRoute keeps the whole declaration (its parameters, its
security scheme and its response model in the OpenAPI document) and answers with a handler that
reads the same inputs itself, through the same functions, and raises the same errors. A
dependency or parameter in the declaration that the handler does not name stops the route from
being built, so nothing added later is skipped in silence. ``tests/service/test_direct_route.py``
sends the same requests to both ways of answering.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
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
    runs: ClassVar[frozenset[Callable[..., Any]]]  # the dependencies ``handler`` runs itself
    reads: ClassVar[frozenset[str]]  # the parameters it reads (query, path, header, cookie)

    def get_route_handler(self) -> Handler:
        self._check_declaration()
        # FastAPI still wraps it: the app's exception handlers answer what it raises.
        return type(self).handler

    def _check_declaration(self) -> None:
        """A dependency or parameter added to the declaration (the route's, or its router's)
        that the handler does not run would be skipped without a word: refuse it at start-up."""
        declared = self.dependant
        calls = {d.call for d in declared.dependencies}
        params = [*declared.query_params, *declared.path_params, *declared.header_params]
        params += declared.cookie_params
        unknown = [getattr(c, "__name__", repr(c)) for c in calls - self.runs]
        unknown += [p.name for p in params if p.name not in self.reads]
        unknown += [p.name for p in declared.body_params]
        if unknown:
            raise TypeError(
                f"{self.path}: {self.handler.__name__} does not read {', '.join(unknown)}; "
                "teach it to, or declare the route without DirectRoute"
            )


def direct(
    handler: Handler, *, runs: Iterable[Callable[..., Any]], reads: Iterable[str] = ()
) -> type[DirectRoute]:
    """The route class (``route_class_override``) that answers with ``handler``, which runs the
    dependencies ``runs`` and reads the parameters ``reads`` itself."""
    attributes = {
        "handler": staticmethod(handler),
        "runs": frozenset(runs),
        "reads": frozenset(reads),
    }
    return type(f"Direct_{handler.__name__}", (DirectRoute,), attributes)


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
