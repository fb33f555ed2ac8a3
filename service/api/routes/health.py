"""The probes: ``/healthz`` (the process is alive) and ``/readyz`` (the model is loaded and warm,
the decode workers alive, not draining).

Public (no API key), so probes and load balancers need no secret: these two, the /v2 probes and
discovery routes (service/oip/routes.py), the page and the API description (/, /docs,
/openapi.json); docs/api.md lists them. HEAD as well as GET: some monitors send HEAD. The HEAD
route is registered after the GET one (decorators apply bottom-up): a 405 for another method then
names the GET route's methods, as the schema does; it stays out of the schema.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api.deps import current_pipeline
from service.api.schemas import HealthResponse, ReadyResponse

router = APIRouter()


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", response_model=HealthResponse, summary="Process is alive")
async def healthz() -> HealthResponse:
    return HealthResponse()


@router.head("/readyz", include_in_schema=False)
@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Model loaded and warmed up",
    responses={503: {"model": ReadyResponse, "description": "not ready (yet)"}},
)
async def readyz(request: Request) -> Response:
    pipeline = current_pipeline(request)
    if pipeline is None:
        return JSONResponse(ReadyResponse(ready=False).model_dump(), status_code=503)
    ready = await pipeline.check_ready()
    body = ReadyResponse(
        ready=ready, variant=pipeline.session.metadata.variant, provider=pipeline.session.provider
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
