"""HTTP routes: /classify, /classify/batch, /healthz, /readyz, /metadata, /metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import onnxruntime as ort
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from .classify import classify_image_bytes, resolve_top_k
from .dependencies import body_progress, current_runtime, get_runtime, require_api_key
from .errors import BadRequest, ServiceError, UnsupportedMediaType
from .runtime import Runtime
from .schemas import (
    BatchingInfo,
    BatchItem,
    BatchResponse,
    ClassifyResponse,
    ErrorBody,
    ErrorResponse,
    HealthResponse,
    MetadataResponse,
    ReadyResponse,
)

RAW_TYPE = "application/octet-stream"  # or any image/*
BINARY = {"type": "string", "format": "binary"}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "empty body, corrupt or truncated image, malformed multipart",
        401: "EFFICIENTNET_API_KEY is set and the bearer token is missing or wrong",
        408: "the request body was not received within the request timeout",
        413: "body over EFFICIENTNET_MAX_UPLOAD_BYTES or image over EFFICIENTNET_MAX_IMAGE_PIXELS",
        415: "not an image, or an unsupported format or content type",
        422: "invalid parameter (e.g. top_k outside 1..the model's class count), or an image "
        "too costly to decode",
        503: "model not ready, or queue full (with Retry-After)",
        504: "not finished within EFFICIENTNET_REQUEST_TIMEOUT_S",
    }
    return {c: {"model": ErrorResponse, "description": described[c]} for c in codes}


def _single_upload_body() -> dict[str, Any]:
    multipart = {"schema": {"type": "object", "required": ["file"], "properties": {"file": BINARY}}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": multipart,
                "image/*": {"schema": BINARY},
                "application/octet-stream": {"schema": BINARY},
            },
        }
    }


def _batch_upload_body() -> dict[str, Any]:
    files = {"type": "array", "items": BINARY}
    schema = {"type": "object", "required": ["file"], "properties": {"file": files}}
    content = {"multipart/form-data": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


# The upper bound is the served model's class count, checked by resolve_top_k (422).
TopK = Annotated[
    int | None,
    Query(
        ge=1,
        description="how many classes to return: 1 to the model's class count (`label_count` in "
        "/metadata); default 5, or every class of a model with fewer",
    ),
]

router = APIRouter()
protected = APIRouter(dependencies=[Depends(require_api_key)])


def _media_type(request: Request) -> str:
    """The Content-Type's media type, lower-cased: RFC 9110 makes type and subtype
    case-insensitive (``IMAGE/JPEG``, ``Multipart/Form-Data``)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_single_upload(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadRequest("multipart upload needs a file in the field 'file'")
            return await upload.read()
    if media_type and not (media_type.startswith("image/") or media_type == RAW_TYPE):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}: send multipart/form-data with a 'file' "
            "field, or the image itself as image/* or application/octet-stream"
        )
    return await request.body()


@protected.post(
    "/classify",
    response_model=ClassifyResponse,
    summary="Classify one image",
    openapi_extra=_single_upload_body(),
    responses=_errors(400, 401, 408, 413, 415, 422, 503, 504),
)
async def classify(
    request: Request, runtime: Annotated[Runtime, Depends(get_runtime)], top_k: TopK = None
) -> ClassifyResponse:
    """The image as multipart field `file`, or as the raw body (`image/*` or octet-stream)."""
    k = resolve_top_k(top_k, runtime.session.classes)
    # 503 before reading the body when there is no room; the slot itself is taken only once
    # the body is complete, so a client trickling its body holds none (service/admission.py).
    with runtime.admission.reading(body_progress(request)):
        data = await _read_single_upload(request)
    with runtime.admission.admit():
        return await classify_image_bytes(runtime, data, k)


async def _classify_one(runtime: Runtime, upload: UploadFile, k: int) -> BatchItem:
    try:
        result = await classify_image_bytes(runtime, await upload.read(), k)
    except ServiceError as exc:
        runtime.metrics.errors.labels(exc.code).inc()
        error = ErrorBody(code=exc.code, message=exc.message)
        return BatchItem(filename=upload.filename, error=error, status_code=exc.status_code)
    return BatchItem(filename=upload.filename, result=result, status_code=200)


@protected.post(
    "/classify/batch",
    response_model=BatchResponse,
    summary="Classify several images",
    openapi_extra=_batch_upload_body(),
    responses=_errors(400, 401, 408, 413, 415, 422, 503),
)
async def classify_batch(
    request: Request, runtime: Annotated[Runtime, Depends(get_runtime)], top_k: TopK = None
) -> BatchResponse:
    """Several `file` parts; one result per file, in order. A bad file gets its own error entry."""
    k = resolve_top_k(top_k, runtime.session.classes)
    if _media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType("send multipart/form-data with one or more 'file' parts")
    limit = runtime.settings.max_batch_files
    with runtime.admission.reading(body_progress(request)):  # 503 when there is no room
        await request.form(max_files=limit, max_fields=8)  # the whole body, parsed
    async with request.form(max_files=limit, max_fields=8) as form:  # the same form, closed after
        uploads = [u for u in form.getlist("file") if isinstance(u, UploadFile)]
        if not uploads:
            raise BadRequest("multipart upload needs at least one file in the field 'file'")
        # One slot per file, taken once the body is complete (413 past the capacity).
        with runtime.admission.admit(len(uploads)):
            # All files at once: they preprocess in parallel and ride the same batches.
            items = await asyncio.gather(*(_classify_one(runtime, u, k) for u in uploads))
    return BatchResponse(variant=runtime.session.metadata.variant, results=list(items))


# Public (no API key), so probes and load balancers need no secret: these two, the /v2 probes
# and discovery routes (service/oip.py), the page and the API description (/, /docs,
# /openapi.json); docs/api.md lists them. HEAD as well as GET: some monitors send HEAD.
# The HEAD route is registered after the GET one (decorators apply bottom-up): a 405 for another
# method then names the GET route's methods, as the schema does; it stays out of the schema.
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
    runtime = current_runtime(request)
    if runtime is None:
        return JSONResponse(ReadyResponse(ready=False).model_dump(), status_code=503)
    body = ReadyResponse(
        ready=runtime.ready,
        variant=runtime.session.metadata.variant,
        provider=runtime.session.provider,
    )
    return JSONResponse(body.model_dump(), status_code=200 if runtime.ready else 503)


@protected.get(
    "/metadata",
    response_model=MetadataResponse,
    summary="The model, its preprocessing and how it is served",
    responses=_errors(401, 503),
)
async def metadata(runtime: Annotated[Runtime, Depends(get_runtime)]) -> MetadataResponse:
    session, settings, policy = runtime.session, runtime.settings, runtime.batch_policy
    meta = session.metadata
    return MetadataResponse(
        name=meta.model_name,
        variant=meta.variant,
        family=meta.family,
        resolution=meta.preprocessing.crop_size,
        preprocessing=meta.preprocessing,
        providers=session.providers,
        provider=session.provider,
        batching=BatchingInfo(
            max_batch_size=policy.max_batch_size,
            max_batch_delay_ms=policy.max_delay_ms,
            inference_workers=policy.workers,
            max_queue=settings.max_queue,
        ),
        model_sha256=session.sha256,  # the model's identity; its path on the server is not shown
        label_count=session.classes,
        weights=meta.weights,
        precision=meta.precision,
        verification=meta.verification,
        onnxruntime_version=ort.__version__,
        limits={
            "max_upload_bytes": settings.max_upload_bytes,
            "max_image_pixels": settings.max_image_pixels,
            "request_timeout_s": settings.request_timeout_s,
            "max_batch_files": settings.max_batch_files,
        },
    )


@protected.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **_errors(401)},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)


router.include_router(protected)
