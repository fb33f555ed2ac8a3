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
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from . import __version__
from .admission import Ticket
from .classify import preprocess_bytes, within_timeout
from .dependencies import body_progress, current_runtime, get_runtime, require_api_key
from .errors import BadRequest, NotReady, ServiceError, UnsupportedMediaType
from .oip_wire import (
    HEADER_LENGTH,
    INPUT_ENCODED,
    INPUT_KINDS,
    OUTPUT_LABELS,
    OUTPUT_PROBABILITIES,
    InferenceRequest,
    OutputTensor,
    RequestedOutput,
    Tensor,
    binary_sections,
    classification_strings,
    decode_bytes,
    decode_numeric,
    normalized_to_pixels,
    parse_request,
    render_response,
    shown,
    split_body,
)
from .ranking import softmax
from .runtime import Runtime
from .schemas import ErrorResponse

SERVER_NAME = "efficientnet-service"
MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"  # what Triton reports for ONNX models
EXTENSIONS = ["binary_tensor_data", "classification"]

DEFAULT_LABELS_K = 5
# /v2 bodies larger than this are parsed and validated in a thread, not on the event loop.
OFF_LOOP_BYTES = 64 * 1024


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


# --- OpenAPI: what each route answers (the handlers build their JSON by hand, with orjson) ----


class OipError(BaseModel):
    """The protocol's error shape."""

    error: str


class OipReady(BaseModel):
    ready: bool


class OipModelReady(BaseModel):
    name: str
    ready: bool


_DESCRIBED = {
    400: "malformed inference request (JSON, shapes, datatypes, binary sections)",
    401: "EFFICIENTNET_API_KEY is set and the bearer token is missing or wrong",
    404: "unknown model name or version",
    413: "body over EFFICIENTNET_MAX_UPLOAD_BYTES, or an image over EFFICIENTNET_MAX_IMAGE_PIXELS",
    415: "Content-Encoding other than identity, or an image format the service does not decode",
    503: "model not ready, or the pipeline is full (with Retry-After)",
    504: "not finished within EFFICIENTNET_REQUEST_TIMEOUT_S",
}


def _oip_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": OipError, "description": _DESCRIBED[c]} for c in codes}


def _body_limit_errors() -> dict[int | str, dict[str, Any]]:
    """Refused by the body-limit middleware before routing, in the service's own error shape
    (a declared Content-Length over the limit), or inside the route, in the protocol's."""
    described = {
        408: "the request body was not received within the request timeout",
        413: _DESCRIBED[413],
    }
    shape = OipError | ErrorResponse
    return {c: {"model": shape, "description": d} for c, d in described.items()}


_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "enum": ["image", "normalized_image", "encoded_image"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["UINT8", "FP32", "BYTES"]},
        "parameters": {"type": "object"},
        "data": {"description": "flat or nested row-major values; BYTES: base64 strings"},
    },
}
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request with exactly one input (see the module docs); with "
        "the binary tensor data extension the JSON is followed by raw tensor bytes and its "
        "length is in the Inference-Header-Content-Length header.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


# --- Running the images through the batcher ----------------------------------------------------

T = TypeVar("T")


async def _all_or_nothing(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """gather, but the first failure cancels the rest (their batcher slots are then skipped)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def _encoded_logits(runtime: Runtime, index: int, data: bytes) -> np.ndarray:
    try:
        image = await preprocess_bytes(runtime, data)
    except ServiceError as exc:  # say which element, keep the status (400/413/415)
        raise ServiceError(
            f"input '{INPUT_ENCODED}'[{index}]: {exc.message}",
            status_code=exc.status_code,
            code=exc.code,
            headers=exc.headers,
        ) from None
    return await runtime.batcher.submit(image)


@dataclass(frozen=True)
class InferenceOutcome:
    probabilities: np.ndarray  # float64 [N, classes]
    parameters: dict[str, Any]


async def run_input(
    runtime: Runtime, tensor: Tensor, raw: bytes | None, ticket: Ticket | None = None
) -> InferenceOutcome:
    """Validate the one input, push each image through the batcher, softmax the logits.

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
    spec = runtime.session.metadata.preprocessing
    n = kind.check_shape(tensor.shape, spec.crop_size, runtime.settings.max_batch_files)
    if ticket is not None:
        ticket.grow_to(n)
    count = math.prod(tensor.shape)
    parameters: dict[str, Any] = {}
    if kind.datatype == "BYTES":
        # Off the event loop: JSON data can be millions of values (base64, numbers).
        blobs = await asyncio.to_thread(decode_bytes, tensor, raw, count)
        work = [_encoded_logits(runtime, i, b) for i, b in enumerate(blobs)]
    else:
        flat = await asyncio.to_thread(decode_numeric, tensor, raw, count)
        if kind.datatype == "FP32":
            x = flat.reshape(n, 3, spec.crop_size, spec.crop_size)
            loop = asyncio.get_running_loop()
            pixels = await loop.run_in_executor(
                runtime.executor, normalized_to_pixels, x, spec.mean, spec.std
            )
            images = pixels.images
            parameters["pixel_rounding_max_error"] = round(pixels.rounding_max_error, 6)
        else:
            # A private, writable copy: np.frombuffer views the request body read-only.
            images = flat.reshape(n, spec.crop_size, spec.crop_size, 3).copy()
        work = [runtime.batcher.submit(image) for image in images]
    rows = await within_timeout(runtime, _all_or_nothing(work), "inference")
    return InferenceOutcome(softmax(np.stack(rows)), parameters)


# --- Outputs -----------------------------------------------------------------------------------


def _positive_int(value: Any, what: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise BadRequest(f"{what} must be an integer from 1 to {limit}, got {value!r}")
    return value


@dataclass(frozen=True)
class OutputPlan:
    name: str
    k: int | None  # None: the probabilities themselves; else K classification strings per image
    binary: bool


def plan_outputs(request: InferenceRequest, classes: int) -> list[OutputPlan]:
    """Validate the requested outputs before any inference runs."""
    binary_default = (request.parameters or {}).get("binary_data_output") is True
    wanted = request.outputs or [RequestedOutput(name=OUTPUT_PROBABILITIES)]
    plans: list[OutputPlan] = []
    for output in wanted:
        if output.name not in (OUTPUT_PROBABILITIES, OUTPUT_LABELS):
            raise BadRequest(
                f"unknown output '{shown(output.name)}'; this model has "
                f"'{OUTPUT_PROBABILITIES}' and '{OUTPUT_LABELS}'"
            )
        if any(plan.name == output.name for plan in plans):
            # Each repeat would render the same tensor again: 1,000 of them made a 61 kB
            # request answer 203 MB. The protocol names each output once.
            raise BadRequest(f"output '{output.name}' is requested more than once")
        p = output.parameters or {}
        binary = p["binary_data"] is True if "binary_data" in p else binary_default
        asked = p.get("classification", p.get("top_k"))
        k = None
        if output.name == OUTPUT_LABELS or asked not in (None, 0):
            chosen = min(DEFAULT_LABELS_K, classes) if asked in (None, 0) else asked
            k = _positive_int(chosen, f"output '{output.name}': classification/top_k", classes)
        plans.append(OutputPlan(output.name, k, binary))
    return plans


def build_outputs(
    plans: list[OutputPlan], probabilities: np.ndarray, labels: list[str]
) -> list[OutputTensor]:
    n, classes = probabilities.shape
    outputs = []
    for plan in plans:
        if plan.k is None:
            values = probabilities.astype(np.float32)
            outputs.append(OutputTensor(plan.name, "FP32", [n, classes], values, plan.binary))
        else:
            strings = classification_strings(probabilities, labels, plan.k)
            outputs.append(OutputTensor(plan.name, "BYTES", [n, plan.k], strings, plan.binary))
    return outputs


# --- Routes ------------------------------------------------------------------------------------


def speaks_oip(path: str) -> bool:
    """Paths under /v2 answer in the protocol's error shape, routed or not (404/405)."""
    return path == router.prefix or path.startswith(router.prefix + "/")


def oip_error(
    request: Request, status_code: int, code: str, message: str, headers: Any
) -> Response:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()
    body = orjson.dumps({"error": message})
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


class OIPRoute(APIRoute):
    """Renders every refusal as the protocol's ``{"error": "..."}``, which OIP clients parse."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def oip_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return oip_error(request, exc.status_code, exc.code, exc.message, exc.headers)
            except RequestValidationError as exc:
                message = "; ".join(str(e.get("msg")) for e in exc.errors()) or "invalid request"
                return oip_error(request, 400, "invalid_request", message, None)
            except StarletteHTTPException as exc:
                code = f"http_{exc.status_code}"
                return oip_error(request, exc.status_code, code, str(exc.detail), exc.headers)

        return oip_handler


router = APIRouter(prefix="/v2", route_class=OIPRoute, tags=["Open Inference Protocol v2"])
PROTECTED = [Depends(require_api_key)]


def _json(body: dict[str, Any], status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def served_model(request: Request) -> str:
    """The name in the model file's metadata (``ModelMetadata.model_name``)."""
    runtime = current_runtime(request)
    session = runtime.session if runtime is not None else request.app.state.preloaded_session
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


def _is_ready(request: Request) -> bool:
    runtime = current_runtime(request)
    return runtime is not None and runtime.ready


# Public (no API key), like /healthz and /readyz: the probes and discovery routes (health,
# server metadata, model readiness), as in Triton and KServe; they show nothing /readyz does
# not (the served model's name). Model metadata and inference need the key when it is set.
@router.head("/health/live", include_in_schema=False)  # after GET: see routes.py's /healthz
@router.get("/health/live", summary="The server process is up")
async def live() -> Response:
    return _json({"live": True})


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
    is_ready = _is_ready(request)
    return _json({"ready": is_ready}, 200 if is_ready else 503)


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return _json({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})


@router.get(
    "/models/{model_name}/ready",
    summary="Model readiness (503 until ready)",
    responses={
        200: {"model": OipModelReady, "description": "ready"},
        **_oip_errors(404),
        503: {"model": OipModelReady, "description": "not ready (yet)"},
    },
)
@router.get("/models/{model_name}/versions/{model_version}/ready", include_in_schema=False)
async def model_ready(
    request: Request, model_name: str, model_version: str | None = None
) -> Response:
    name = _check_model(request, model_name, model_version)
    is_ready = _is_ready(request)
    return _json({"name": name, "ready": is_ready}, 200 if is_ready else 503)


@router.get(
    "/models/{model_name}",
    summary="Model metadata: inputs, outputs",
    dependencies=PROTECTED,
    responses=_oip_errors(401, 404, 503),
)
@router.get(
    "/models/{model_name}/versions/{model_version}",
    include_in_schema=False,
    dependencies=PROTECTED,
)
async def model_metadata(
    request: Request,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    model_name: str,
    model_version: str | None = None,
) -> Response:
    name = _check_model(request, model_name, model_version)
    meta = runtime.session.metadata
    spec = meta.preprocessing
    return _json(
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
                "provider": runtime.session.provider,
                "one_input_of": {k.name: k.description for k in INPUT_KINDS.values()},
                "resize_size": spec.resize_size,
                "crop_size": spec.crop_size,
                "interpolation": spec.interpolation,
                "mean": list(spec.mean),
                "std": list(spec.std),
                "max_images_per_request": runtime.settings.max_batch_files,
            },
        }
    )


@router.post(
    "/models/{model_name}/infer",
    summary="Inference",
    dependencies=PROTECTED,
    openapi_extra=_INFER_BODY,
    responses={**_oip_errors(400, 401, 404, 415, 503, 504), **_body_limit_errors()},
)
@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    include_in_schema=False,
    dependencies=PROTECTED,
)
async def infer(
    request: Request,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    model_name: str,
    model_version: str | None = None,
) -> Response:
    """JSON or binary-extension body with exactly one of the model's inputs (module docstring)."""
    name = _check_model(request, model_name, model_version)
    encoding = request.headers.get("content-encoding", "identity")
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send it plain")
    # No room: 503 at once, before the body is read; the slots themselves are taken only once
    # the body is complete, so a client trickling its body holds none (service/admission.py).
    with runtime.admission.reading(body_progress(request)):
        body = await request.body()
    classes = runtime.session.classes
    header_length = request.headers.get(HEADER_LENGTH)
    # One slot, then one per image; taken before parsing, so the bodies held and parsed at once
    # are bounded by the capacity too, not only by the connection limit.
    with runtime.admission.admit() as ticket:
        if len(body) > OFF_LOOP_BYTES:  # parsing megabytes of JSON would stall other requests
            wire = await asyncio.to_thread(parse_infer_body, body, header_length, classes)
        else:
            wire = parse_infer_body(body, header_length, classes)
        outcome = await run_input(runtime, wire.tensor, wire.raw, ticket)
    labels = runtime.session.metadata.labels
    outputs = build_outputs(wire.plans, outcome.probabilities, labels)
    return render_response(name, MODEL_VERSION, wire.request, outputs, outcome.parameters)


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
