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

``DirectDispatch`` then takes such a request past the rest of FastAPI's per-request machinery:
below the app's own middleware it hands a request for a DirectRoute's exact path and method to
the handler, inside the app's own exception handlers, without the router (in FastAPI 0.165
included routers are matched through nested route contexts), the exit-stack middleware and the
route's request wrapper. Under c64 load that took the event loop's CPU per lite0 web photo from
1.58 to 1.26 ms (BENCHMARKS.md, "Requests for a direct route skip the router").
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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


def direct_routes(routers: Iterable[APIRouter]) -> list[DirectRoute]:
    """The DirectRoutes of ``routers``, which the app includes as they are (no prefix)."""
    routes = (route for router in routers for route in router.routes)
    return [route for route in routes if isinstance(route, DirectRoute)]


class DirectDispatch:
    """A request for a DirectRoute (its exact path, one of its methods) goes straight to its
    handler, inside the app's exception handlers; any other goes on to the router.

    Added as the app's innermost middleware, so every middleware of the app still sees the
    request: ``app`` is then the ExceptionMiddleware FastAPI builds around its router, and a
    copy of it with the handler in place of the router answers what the handler raises exactly
    as the route would. A request under a root path takes the router's way, which knows how to
    strip it.
    """

    def __init__(self, app: ASGIApp, routes: Iterable[DirectRoute]) -> None:
        if not isinstance(app, ExceptionMiddleware):
            raise TypeError(
                f"DirectDispatch must be the app's innermost middleware (around FastAPI's "
                f"ExceptionMiddleware), not around {type(app).__name__}"
            )
        self.app = app
        self._routes: dict[tuple[str, str], DirectRoute] = {}
        for route in routes:
            if route.param_convertors:
                raise TypeError(f"{route.path}: DirectDispatch answers exact paths only")
            self._routes.update({(method, route.path): route for method in route.methods or ()})
        self._answer = copy.copy(app)  # the app's exception handlers, around the handler
        self._answer.app = _handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self._routes.get((scope["method"], scope["path"]))
        if route is None:
            await self.app(scope, receive, send)
            return
        # What the router would have put in the scope (request metrics label by the route).
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
        await self._answer(scope, receive, send)


async def _handle(scope: Scope, receive: Receive, send: Send) -> None:
    response = await scope["route"].handler(Request(scope, receive, send))
    await response(scope, receive, send)
