"""FastAPI dependencies: the runtime (503 until ready), the optional API key, and how far a
request's body has come (for admission control)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .admission import BodyProgress
from .errors import NotReady, Unauthorized
from .middleware import BODY_PROGRESS
from .runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="EFFICIENTNET_API_KEY, when it is set")


def current_runtime(request: Request) -> Runtime | None:
    """The runtime once the lifespan has built it (it may still be warming up), else None."""
    return getattr(request.app.state, "runtime", None)


def body_progress(request: Request) -> BodyProgress | None:
    """The body guard BodyLimitMiddleware put in the scope (None without that middleware)."""
    progress: BodyProgress | None = request.scope.get(BODY_PROGRESS)
    return progress


def get_runtime(request: Request) -> Runtime:
    runtime = current_runtime(request)
    if runtime is None or not runtime.ready:
        raise NotReady("model is not loaded and warmed up yet (or the server is shutting down)")
    return runtime


def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """When EFFICIENTNET_API_KEY is set, require ``Authorization: Bearer <key>``."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    # Constant time, so response timing does not reveal how much of a guess was right.
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized()
