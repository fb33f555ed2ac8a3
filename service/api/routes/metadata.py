"""``GET /metadata`` (the model and how it is served) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import onnxruntime as ort
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.api.deps import ReadyPipeline, require_api_key
from service.api.errors import error_responses
from service.api.schemas import BatchingInfo, Limits, MetadataResponse

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get(
    "/metadata",
    response_model=MetadataResponse,
    summary="The model, its preprocessing and how it is served",
    responses=error_responses(401, 503),
)
async def metadata(pipeline: ReadyPipeline) -> MetadataResponse:
    model, settings = pipeline.model, pipeline.settings
    session, policy = model.session, model.policy
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
        training=meta.training,
        onnxruntime_version=ort.__version__,
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes,
            max_image_pixels=settings.max_image_pixels,
            request_timeout_s=settings.request_timeout_s,
            max_batch_files=settings.max_batch_files,
        ),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **error_responses(401)},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
