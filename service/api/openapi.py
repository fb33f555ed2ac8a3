"""The app's OpenAPI description where FastAPI's default needs a word more."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, routing

from service.request_id import MAX_LENGTH, SANE


def route_paths(app: FastAPI) -> list[str]:
    """Every route's path. FastAPI >= 0.123 keeps an included router as one lazy entry of
    ``app.routes``; ``iter_route_contexts`` flattens them (older releases list them flat)."""
    iterate = getattr(routing, "iter_route_contexts", None)
    routes = iterate(app.routes) if iterate else app.routes
    return [path for route in routes if (path := getattr(route, "path", None))]


def optional_auth(schema: dict[str, Any]) -> dict[str, Any]:
    """No API key configured: the bearer token is optional (``{}``: no auth is an alternative)."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            security = operation.get("security")
            if security and {} not in security:
                security.append({})
    return schema


REQUEST_ID = {
    "description": "the caller's X-Request-ID when it sent a sane one (at most "
    f"{MAX_LENGTH} characters of letters, digits and ._:=+/@-), else a new one",
    "schema": {"type": "string", "pattern": f"^{SANE.pattern.decode('ascii')}$"},
}


def with_request_id(schema: dict[str, Any]) -> dict[str, Any]:
    """Every answer carries X-Request-ID (service/request_id.py): say so on every response."""
    schema.setdefault("components", {}).setdefault("headers", {})["X-Request-ID"] = REQUEST_ID
    ref = {"$ref": "#/components/headers/X-Request-ID"}
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Request-ID"] = ref
    return schema


def describe(app: FastAPI, api_key_set: bool) -> None:
    """The request id on every response, and without a key the bearer token optional."""

    def schema() -> dict[str, Any]:
        described = with_request_id(FastAPI.openapi(app))
        return described if api_key_set else optional_auth(described)

    app.openapi = schema  # type: ignore[method-assign]
