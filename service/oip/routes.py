"""Open Inference Protocol v2 (KServe v2, Triton's HTTP/REST API) for the one served model.

Endpoints (all under ``/v2``): ``GET /health/live``, ``GET /health/ready``, ``GET /`` (server
metadata), ``GET /models/{name}[/versions/1]`` (model metadata), ``GET .../ready`` and
``POST .../infer``. The model's name is the one its file's metadata gives (the exporter's
``--name``; ``efficientnet_<variant>`` for files without one), version ``1``.

A request carries exactly one of three inputs; the model metadata lists them:

- ``image``            UINT8 ``[N, crop, crop, 3]``: pixels already resized and center-cropped,
  exactly the graph's own input (docs/onnx-contract.md).
- ``normalized_image`` FP32 ``[N, 3, crop, crop]``: the classic torchvision tensor,
  ``x = (p / 255 - mean) / std``. The graph takes 8-bit pixels, so the server inverts that and
  rounds to the nearest integer, ``p = round((x * std + mean) * 255)``: a tensor made from 8-bit
  pixels comes back bit-exact; one made from non-integer pixels (e.g. resized in float) is
  quantized to 8 bits (at most half a pixel level; the response's ``pixel_rounding_max_error``
  parameter says how much). Values more than half a level outside ``0..255`` are refused (400),
  since they cannot come from an image normalized with this model's mean/std.
- ``encoded_image``    BYTES ``[N]`` (or ``[N, 1]``): image files (JPEG, PNG, ...) preprocessed
  exactly like ``/classify``. With the binary tensor extension each element is the raw file; in
  plain JSON each element is the file in base64 (JSON strings cannot carry raw bytes).

Outputs: ``probabilities`` FP32 ``[N, classes]`` (softmax; ``classes`` is the model's own class
count), returned when no ``outputs`` are requested; and on request ``labels`` BYTES ``[N, K]`` in
Triton's classification format ``"score:index:label"``, best first, with K from the output's
``classification`` (Triton/KServe) or ``top_k`` parameter (default 5, or every class of a smaller
model; at most the class count). As in Triton, asking ``probabilities`` for
``classification: K`` turns that output into the same K strings.

Both request and response may use the binary tensor data extension (the default of
``tritonclient``): the JSON header is followed by raw tensor bytes and its length is given in the
``Inference-Header-Content-Length`` header; an output is binary when it asks for
``binary_data: true`` or the request sets ``binary_data_output: true``.

Every image goes through the same batcher as ``/classify``, one submit per image, concurrently.
Errors use the protocol's shape, ``{"error": "message"}``: 400 for a malformed request, 404 for
an unknown model, 401/413/415/503/504 as for the rest of the service.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service import __version__
from service.api.deps import ReadyPipeline, admitted, current_pipeline, require_api_key
from service.api.errors import OIP_PREFIX, refusal, validation_message
from service.errors import BadRequest, NotReady, ServiceError, UnsupportedMediaType
from service.oip.codec import (
    HEADER_LENGTH,
    INPUT_ENCODED,
    INPUT_KINDS,
    InferenceRequest,
    Tensor,
    binary_sections,
    decode_bytes,
    decode_numeric,
    normalized_to_pixels,
    parse_request,
    shown,
    split_body,
)
from service.oip.openapi import (
    INFER_BODY,
    OipModelReady,
    OipReady,
    body_limit_errors,
    oip_errors,
)
from service.oip.outputs import (
    OUTPUT_LABELS,
    OUTPUT_PROBABILITIES,
    OutputPlan,
    build_outputs,
    encode_response,
    plan_outputs,
)
from service.pipeline.admission import Ticket
from service.pipeline.model import ServedModel
from service.pipeline.pipeline import Pipeline

SERVER_NAME = "efficientnet-service"
MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"  # what Triton reports for ONNX models
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]

# /v2 bodies larger than this are parsed and validated in a thread, not on the event loop.
OFF_LOOP_BYTES = 64 * 1024


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


# --- The request: parsed and checked whole before any inference --------------------------------


@dataclass(frozen=True)
class InferBody:
    request: InferenceRequest
    tensor: Tensor  # the one input
    raw: bytes | None  # its binary section, if any
    plans: list[OutputPlan]


def parse_infer_body(body: bytes, header_length: str | None, classes: int) -> InferBody:
    """The whole request checked before any inference (pure: runs off the event loop)."""
    header, binary = split_body(body, header_length)
    parsed = parse_request(header)
    sections = binary_sections(parsed.inputs, binary)
    if len(parsed.inputs) != 1:
        given = [shown(t.name) for t in parsed.inputs]
        raise BadRequest(f"send exactly one input (one of {list(INPUT_KINDS)}), got {given}")
    plans = plan_outputs(parsed, classes)
    return InferBody(parsed, parsed.inputs[0], sections[0], plans)


@dataclass(frozen=True)
class InferenceOutcome:
    probabilities: np.ndarray  # float64 [N, classes]
    parameters: dict[str, Any]


async def run_input(
    pipeline: Pipeline,
    model: ServedModel,
    tensor: Tensor,
    raw: bytes | None,
    ticket: Ticket | None = None,
) -> InferenceOutcome:
    """Validate the one input, turn it into images, run them through the pipeline.

    ``ticket``: the request's admission; it grows to one slot per image (503 when full).
    """
    kind = INPUT_KINDS.get(tensor.name)
    if kind is None:
        names = ", ".join(f"'{k}' ({v.datatype})" for k, v in INPUT_KINDS.items())
        raise BadRequest(f"unknown input '{shown(tensor.name)}'; this model takes one of {names}")
    if tensor.datatype != kind.datatype:
        raise BadRequest(
            f"input '{kind.name}' must be {kind.datatype}, got datatype '{tensor.datatype}'"
        )
    if raw is None and tensor.data is None:
        raise BadRequest(f"input '{kind.name}' has no data (neither 'data' nor binary_data_size)")
    spec = model.session.metadata.preprocessing
    n = kind.check_shape(tensor.shape, spec.crop_size, pipeline.settings.max_batch_files)
    if ticket is not None:
        ticket.grow_to(n)
    count = math.prod(tensor.shape)
    parameters: dict[str, Any] = {}
    images: list[bytes] | np.ndarray
    if kind.datatype == "BYTES":
        # Off the event loop: JSON data can be millions of values (base64, numbers).
        images = await asyncio.to_thread(decode_bytes, tensor, raw, count)
    else:
        flat = await asyncio.to_thread(decode_numeric, tensor, raw, count)
        if kind.datatype == "FP32":
            x = flat.reshape(n, 3, spec.crop_size, spec.crop_size)
            pixels = await pipeline.to_pixels(normalized_to_pixels, x, spec.mean, spec.std)
            images = pixels.images
            parameters["pixel_rounding_max_error"] = round(pixels.rounding_max_error, 6)
        else:
            # A private, writable copy: np.frombuffer views the request body read-only.
            images = flat.reshape(n, spec.crop_size, spec.crop_size, 3).copy()
    probabilities = await pipeline.probabilities(model, list(images), INPUT_ENCODED)
    return InferenceOutcome(probabilities, parameters)


# --- Routes ------------------------------------------------------------------------------------


class OIPRoute(APIRoute):
    """Renders every refusal as the protocol's ``{"error": "..."}``, which OIP clients parse."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def oip_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return refusal(request, exc, oip=True)
            except RequestValidationError as exc:
                message = validation_message(exc, with_location=False)
                error = BadRequest(message, code="invalid_request")
                return refusal(request, error, oip=True)
            except StarletteHTTPException as exc:
                code = f"http_{exc.status_code}"
                error = ServiceError(str(exc.detail), status_code=exc.status_code, code=code)
                error.headers = dict(exc.headers) if exc.headers else None
                return refusal(request, error, oip=True)

        return oip_handler


router = APIRouter(prefix=OIP_PREFIX, route_class=OIPRoute, tags=["Open Inference Protocol v2"])
PROTECTED = [Depends(require_api_key)]


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def served_model(request: Request) -> str:
    """The name in the model file's metadata (``ModelMetadata.model_name``)."""
    pipeline = current_pipeline(request)
    session = pipeline.session if pipeline is not None else request.app.state.preloaded_session
    if session is None:  # only while the lifespan is still loading the model
        raise NotReady("model is not loaded yet")
    return session.metadata.model_name


def _check_model(request: Request, name: str, version: str | None) -> str:
    served = served_model(request)
    if name != served:
        raise ModelNotFound(f"unknown model '{name}'; this server serves '{served}'")
    if version not in (None, "", MODEL_VERSION):
        raise ModelNotFound(f"model '{name}' has no version '{version}'; it has '{MODEL_VERSION}'")
    return served


async def _is_ready(request: Request) -> bool:
    pipeline = current_pipeline(request)
    return pipeline is not None and await pipeline.check_ready()


# Public (no API key), like /healthz and /readyz: the probes and discovery routes (health,
# server metadata, model readiness), as in Triton and KServe; they show nothing /readyz does
# not (the served model's name). Model metadata and inference need the key when it is set.
@router.head("/health/live", include_in_schema=False)  # after GET: see service/api/routes/health.py
@router.get("/health/live", summary="The server process is up")
async def live() -> Response:
    return json_response({"live": True})


@router.head("/health/ready", include_in_schema=False)
@router.get(
    "/health/ready",
    summary="The model is loaded and warmed up (503 until then)",
    responses={
        200: {"model": OipReady, "description": "ready"},
        503: {"model": OipReady, "description": "not ready (yet)"},
    },
)
async def ready(request: Request) -> Response:
    is_ready = await _is_ready(request)
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})


@router.get(
    "/models/{model_name}/ready",
    summary="Model readiness (503 until ready)",
    responses={
        200: {"model": OipModelReady, "description": "ready"},
        **oip_errors(404),
        503: {"model": OipModelReady, "description": "not ready (yet)"},
    },
)
@router.get("/models/{model_name}/versions/{model_version}/ready", include_in_schema=False)
async def model_ready(
    request: Request, model_name: str, model_version: str | None = None
) -> Response:
    name = _check_model(request, model_name, model_version)
    is_ready = await _is_ready(request)
    return json_response({"name": name, "ready": is_ready}, 200 if is_ready else 503)


@router.get(
    "/models/{model_name}",
    summary="Model metadata: inputs, outputs",
    dependencies=PROTECTED,
    responses=oip_errors(401, 404, 503),
)
@router.get(
    "/models/{model_name}/versions/{model_version}",
    include_in_schema=False,
    dependencies=PROTECTED,
)
async def model_metadata(
    request: Request,
    pipeline: ReadyPipeline,
    model_name: str,
    model_version: str | None = None,
) -> Response:
    name = _check_model(request, model_name, model_version)
    meta = pipeline.session.metadata
    spec = meta.preprocessing
    return json_response(
        {
            "name": name,
            "versions": [MODEL_VERSION],
            "platform": PLATFORM,
            "inputs": [
                {"name": k.name, "datatype": k.datatype, "shape": k.shape(spec.crop_size)}
                for k in INPUT_KINDS.values()
            ],
            "outputs": [
                {"name": OUTPUT_PROBABILITIES, "datatype": "FP32", "shape": [-1, len(meta.labels)]},
                {"name": OUTPUT_LABELS, "datatype": "BYTES", "shape": [-1, -1]},
            ],
            # Beyond the protocol's fields: what a client needs to build each input itself.
            "parameters": {
                "variant": meta.variant,
                "provider": pipeline.session.provider,
                "one_input_of": {k.name: k.description for k in INPUT_KINDS.values()},
                "resize_size": spec.resize_size,
                "crop_size": spec.crop_size,
                "interpolation": spec.interpolation,
                "mean": list(spec.mean),
                "std": list(spec.std),
                "max_images_per_request": pipeline.settings.max_batch_files,
            },
        }
    )


@router.post(
    "/models/{model_name}/infer",
    summary="Inference",
    dependencies=PROTECTED,
    openapi_extra=INFER_BODY,
    responses={**oip_errors(400, 401, 404, 415, 503, 504), **body_limit_errors()},
)
@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    include_in_schema=False,
    dependencies=PROTECTED,
)
async def infer(
    request: Request,
    pipeline: ReadyPipeline,
    model_name: str,
    model_version: str | None = None,
) -> Response:
    """JSON or binary-extension body with exactly one of the model's inputs (module docstring)."""
    name = _check_model(request, model_name, model_version)
    encoding = request.headers.get("content-encoding", "identity")
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send it plain")
    header_length = request.headers.get(HEADER_LENGTH)
    # The model in service now answers the whole request, even if another is swapped in.
    with pipeline.using() as model:
        classes = model.session.classes
        # One slot, then one per image; taken before parsing, so the bodies held and parsed at
        # once are bounded by the capacity too, not only by the connection limit.
        async with admitted(request, pipeline, request.body) as (body, ticket):
            if len(body) > OFF_LOOP_BYTES:  # parsing megabytes of JSON would stall the loop
                wire = await asyncio.to_thread(parse_infer_body, body, header_length, classes)
            else:
                wire = parse_infer_body(body, header_length, classes)
            outcome = await run_input(pipeline, model, wire.tensor, wire.raw, ticket)
    labels = model.session.metadata.labels
    outputs = build_outputs(wire.plans, outcome.probabilities, labels)
    encoded = encode_response(name, MODEL_VERSION, wire.request, outputs, outcome.parameters)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)
