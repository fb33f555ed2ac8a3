"""The one error renderer and error counter of every route, and the app's exception handlers.

Two shapes, by where the request went: the service's own ``{"error": {"code", "message",
"request_id"}}`` (service/errors.py), and under ``/v2`` the Open Inference Protocol's
``{"error": "..."}``, which its clients (``tritonclient``, KServe's) parse. Both carry the
request id in ``X-Request-ID``. Every refusal is counted here, by its code.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.api.schemas import ErrorResponse
from service.errors import ClientClosedRequest, ServiceError, error_body
from service.metrics import Metrics
from service.request_id import HEADER, request_id_of

log = logging.getLogger("service")

REQUEST_ID_HEADER = HEADER.decode("ascii")
OIP_PREFIX = "/v2"  # the Open Inference Protocol's routes, and the paths that answer in its shape

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def speaks_oip(path: str) -> bool:
    """Paths under /v2 answer in the protocol's error shape, routed or not (404/405)."""
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def count(metrics: Metrics | None, code: str) -> None:
    if metrics is not None:
        metrics.errors.labels(code).inc()


def error_response(
    status_code: int,
    code: str,
    message: str,
    request_id: str,
    headers: dict[str, str] | None = None,
    *,
    oip: bool = False,
) -> Response:
    """An error answer with its request id in the header, and in the body of the service's own
    shape (the protocol's shape under /v2 has no place for it)."""
    body = orjson.dumps({"error": message}) if oip else error_body(code, message, request_id)
    headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def service_error_response(exc: ServiceError, request_id: str, *, oip: bool = False) -> Response:
    return error_response(exc.status_code, exc.code, exc.message, request_id, exc.headers, oip=oip)


def refusal(request: Request, exc: ServiceError, *, oip: bool = False) -> Response:
    """The answer to a refused request: counted, in its route family's shape."""
    count(getattr(request.app.state, "metrics", None), exc.code)
    return service_error_response(exc, request_id_of(request.scope), oip=oip)


def validation_message(exc: RequestValidationError, *, with_location: bool = True) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        what = str(error.get("msg", "invalid"))
        parts.append(f"{where}: {what}" if with_location else what)
    return "; ".join(parts) or "invalid request"


def http_error(exc: StarletteHTTPException) -> ServiceError:
    """Starlette's own refusals (404, 405, ...) as ours."""
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    headers = dict(exc.headers) if exc.headers else None
    return ServiceError(str(exc.detail), status_code=exc.status_code, code=code, headers=headers)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return refusal(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    # No /v2 route matched (404/405): still the protocol's shape there.
    return refusal(request, http_error(exc), oip=speaks_oip(request.url.path))


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-request: its doing, not ours. One line, counted as 499."""
    assert isinstance(exc, ClientDisconnect)
    error = ClientClosedRequest("client closed the connection before the answer")
    log.info("%s %s: %s (499)", request.method, request.url.path, error.message)
    return refusal(request, error)  # nobody reads it; its status goes to the metrics


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = ServiceError(validation_message(exc), status_code=422, code="invalid_request")
    return refusal(request, error)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return refusal(request, ServiceError("internal server error"))


def install_handlers(app: FastAPI) -> None:
    handlers: dict[Any, Any] = {
        ServiceError: _service_error,
        ClientDisconnect: _client_disconnect,
        StarletteHTTPException: _http_error,
        RequestValidationError: _validation_error,
        Exception: _unexpected_error,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)


# --- What each status means, for the OpenAPI description of every route -----------------------

DESCRIBED = {
    400: "empty body, corrupt or truncated image, malformed multipart",
    401: "EFFICIENTNET_API_KEY is set and the bearer token is missing or wrong",
    408: "the request body was not received within the request timeout",
    413: "body over EFFICIENTNET_MAX_UPLOAD_BYTES, or an image over EFFICIENTNET_MAX_IMAGE_PIXELS",
    415: "not an image, or an unsupported format or content type",
    422: "invalid parameter (e.g. top_k outside 1..the model's class count), or an image "
    "too costly to decode",
    503: "model not ready, or the pipeline is full (with Retry-After)",
    504: "not finished within EFFICIENTNET_REQUEST_TIMEOUT_S",
}


def error_responses(
    *codes: int, model: Any = None, described: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses: ``DESCRIBED``, or a route family's own words."""
    words = {**DESCRIBED, **(described or {})}
    shape = model if model is not None else ErrorResponse
    return {c: {"model": shape, "description": words[c]} for c in codes}
