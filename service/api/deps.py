"""FastAPI dependencies: the pipeline (503 until ready), the optional API key, and the one
admission sequence of every route that takes images."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import NotReady, Unauthorized
from service.pipeline.admission import BODY_PROGRESS, BodyProgress, Ticket
from service.pipeline.pipeline import Pipeline
from service.pipeline.spans import ADMISSION, stage

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False, description="EFFICIENTNET_API_KEY, when it is set")


def current_pipeline(request: Request) -> Pipeline | None:
    """The pipeline once the lifespan has built it (it may still be warming up), else None."""
    return getattr(request.app.state, "pipeline", None)


# The dependencies are coroutines: FastAPI runs a plain ``def`` dependency in its thread pool,
# two thread hops on every request for a few attribute reads.


async def get_pipeline(request: Request) -> Pipeline:
    pipeline = current_pipeline(request)
    # Draining for a shutdown is not-ready for the probes only: what arrives meanwhile is served.
    if pipeline is None or not pipeline.started:
        raise NotReady("model is not loaded and warmed up yet (or the server is shutting down)")
    return pipeline


ReadyPipeline = Annotated[Pipeline, Depends(get_pipeline)]


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """When EFFICIENTNET_API_KEY is set, require ``Authorization: Bearer <key>``."""
    check_api_key(request, credentials)


async def authorize(request: Request) -> None:
    """``require_api_key`` for a route that reads the key itself: the ``Authorization`` header is
    parsed only when a key is set, not on every request of an open service."""
    if request.app.state.settings.api_key is not None:
        check_api_key(request, await _bearer(request))


def check_api_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    # Constant time, so response timing does not reveal how much of a guess was right.
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized()


@asynccontextmanager
async def admitted(
    request: Request,
    pipeline: Pipeline,
    read: Callable[[], Awaitable[T]],
    slots: Callable[[T], int] = lambda _: 1,
) -> AsyncIterator[tuple[T, Ticket]]:
    """Read the body with ``read``, then hold ``slots(body)`` pipeline slots for the block.

    503 before reading when there is no room; the body's bytes are reserved from the upload
    memory before it is read and held for the block; the slots are taken only once the body
    is complete, so a client trickling its body holds none (service/pipeline/admission.py).
    Traced as the ``admission`` stage: until the slots are held, the body's reading included."""
    progress: BodyProgress | None = request.scope.get(BODY_PROGRESS)
    admission = pipeline.admission
    async with AsyncExitStack() as held:
        with stage(ADMISSION):
            with admission.reading(progress):
                timeout_s = pipeline.settings.request_timeout_s
                await held.enter_async_context(admission.holding_body(progress, timeout_s))
                body = await read()
            ticket = held.enter_context(admission.admit(slots(body)))
        yield body, ticket
