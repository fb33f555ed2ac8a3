"""``POST /classify`` (one image) and ``POST /classify/batch`` (several)."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import TypeAdapter
from starlette.datastructures import UploadFile
from starlette.responses import Response

from service.api.deps import (
    ReadyPipeline,
    admitted,
    authorize,
    get_pipeline,
    require_api_key,
)
from service.api.direct import direct, json_answer, query_value
from service.api.errors import count, error_responses
from service.api.schemas import (
    BatchItem,
    BatchResponse,
    ClassifyResponse,
    ErrorBody,
    Prediction,
    Timing,
)
from service.api.upload import MULTIPART, media_type, read_form, read_single_upload, uploads
from service.errors import BadRequest, ServiceError, UnsupportedMediaType
from service.pipeline.model import ServedModel
from service.pipeline.pipeline import Classification, Pipeline
from service.pipeline.ranking import DEFAULT_TOP_K
from service.request_id import request_id_of

BINARY = {"type": "string", "format": "binary"}


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

router = APIRouter(dependencies=[Depends(require_api_key)])


def resolve_top_k(requested: int | None, classes: int) -> int:
    """The ``top_k`` to answer with: 5 by default, or every class of a smaller model; a request
    for more than the model has is refused (422, naming the bound), never silently cut."""
    if requested is None:
        return min(DEFAULT_TOP_K, classes)
    if requested > classes:
        raise ServiceError(
            f"query.top_k: this model has {classes} classes, so top_k must be from 1 to "
            f"{classes}; got {requested}",
            status_code=422,
            code="invalid_request",
        )
    return requested


def _response(model: ServedModel, result: Classification) -> ClassifyResponse:
    return ClassifyResponse(
        variant=model.session.metadata.variant,
        predictions=[Prediction(**vars(p)) for p in result.predictions],
        timing_ms=Timing(**vars(result.timing)),
    )


async def classify(
    request: Request, pipeline: ReadyPipeline, top_k: TopK = None
) -> ClassifyResponse:
    """The image as multipart field `file`, or as the raw body (`image/*` or octet-stream)."""
    # The model in service now answers the whole request, even if another is swapped in.
    with pipeline.using() as model:
        k = resolve_top_k(top_k, model.session.classes)
        read = partial(read_single_upload, request)
        async with admitted(request, pipeline, read) as (data, _):
            return _response(model, await pipeline.classify(model, data, k))


_TOP_K = TypeAdapter(TopK)


async def answer_classify(request: Request) -> Response:
    """``classify`` with what FastAPI would resolve for it read here: the router's API key, the
    ready pipeline, ``top_k`` (service/api/direct.py)."""
    await authorize(request)
    pipeline = await get_pipeline(request)
    answer = await classify(request, pipeline, query_value(request, "top_k", _TOP_K))
    return json_answer(answer)


# The busiest route: declared here for the OpenAPI document, answered by answer_classify.
router.add_api_route(
    "/classify",
    classify,
    methods=["POST"],
    route_class_override=direct(
        answer_classify, runs=(require_api_key, get_pipeline), reads=("top_k",)
    ),
    response_model=ClassifyResponse,
    summary="Classify one image",
    openapi_extra=_single_upload_body(),
    responses=error_responses(400, 401, 408, 413, 415, 422, 503, 504),
)


async def _classify_one(
    pipeline: Pipeline, model: ServedModel, upload: UploadFile, k: int, request_id: str
) -> BatchItem:
    try:
        result = await pipeline.classify(model, await upload.read(), k)
    except ServiceError as exc:
        count(pipeline.metrics, exc.code)
        error = ErrorBody(code=exc.code, message=exc.message, request_id=request_id)
        return BatchItem(filename=upload.filename, error=error, status_code=exc.status_code)
    return BatchItem(filename=upload.filename, result=_response(model, result), status_code=200)


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    summary="Classify several images",
    openapi_extra=_batch_upload_body(),
    responses=error_responses(400, 401, 408, 413, 415, 422, 503),
)
async def classify_batch(
    request: Request, pipeline: ReadyPipeline, top_k: TopK = None
) -> BatchResponse:
    """Several `file` parts; one result per file, in order. A bad file gets its own error entry."""
    with pipeline.using() as model:  # every file by the same model
        k = resolve_top_k(top_k, model.session.classes)
        if media_type(request) != MULTIPART:
            raise UnsupportedMediaType("send multipart/form-data with one or more 'file' parts")
        results = await _classify_files(request, pipeline, model, k)
    return BatchResponse(variant=model.session.metadata.variant, results=results)


async def _classify_files(
    request: Request, pipeline: Pipeline, model: ServedModel, k: int
) -> list[BatchItem]:
    # One slot per file, taken once the body is complete (413 past the capacity).
    read = partial(read_form, request, pipeline.settings.max_batch_files)
    async with admitted(request, pipeline, read, lambda form: len(uploads(form))) as (form, _):
        try:
            files = uploads(form)
            if not files:
                raise BadRequest("multipart upload needs at least one file in the field 'file'")
            # All files at once: they decode in parallel and ride the same batches.
            request_id = request_id_of(request.scope)
            work = (_classify_one(pipeline, model, u, k, request_id) for u in files)
            return list(await asyncio.gather(*work))
        finally:
            await form.close()
