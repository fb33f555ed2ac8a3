"""The app's OpenAPI description where FastAPI's default needs a word more."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, routing


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


def describe_auth(app: FastAPI, api_key_set: bool) -> None:
    if not api_key_set:
        app.openapi = lambda: optional_auth(FastAPI.openapi(app))  # type: ignore[method-assign]
