"""The one JSON error shape, rendered with orjson."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from .errors import ServiceError


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def service_error_response(exc: ServiceError) -> Response:
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)
