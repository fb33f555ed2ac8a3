"""The Open Inference Protocol's model repository extension, for the one served model.

The repository is EFFICIENTNET_MODEL_DIR: a model named ``flowers`` is the file
``flowers.onnx`` there (the exporter's and the trainer's ``--name`` writes exactly that).
``POST /v2/repository/models/{name}/load`` swaps that file in without dropping a request
(``Pipeline.swap``: loaded, checked against the contract and the name, warmed beside the model
in service, then put in service at once); loading the served model's name again re-reads its
file. This server serves exactly one model, so ``unload`` is refused: load another in its
place. ``POST /v2/repository/index`` lists the directory's models and which one is in service.
All behind the API key, when one is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from model_contract import is_model_name
from service.api.deps import ReadyPipeline
from service.api.errors import OIP_PREFIX, error_responses
from service.errors import BadRequest
from service.oip.openapi import OipError
from service.oip.routes import MODEL_VERSION, PROTECTED, ModelNotFound, OIPRoute, json_response
from service.pipeline.pipeline import Pipeline

SUFFIX = ".onnx"

_DESCRIBED = {
    400: "not a model name, or the file is refused (unreadable, not ours, wrong name or variant, "
    "fails to run): the model in service is unchanged",
    404: "no such model file in EFFICIENTNET_MODEL_DIR",
    409: "another swap is in progress",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(*codes, model=OipError, described=_DESCRIBED)


router = APIRouter(
    prefix=f"{OIP_PREFIX}/repository",
    route_class=OIPRoute,
    dependencies=PROTECTED,
    tags=["Open Inference Protocol v2"],
)


def model_file(pipeline: Pipeline, name: str) -> Path:
    """The file that holds the model ``name``: ``<model dir>/<name>.onnx``, or the file in
    service when that is the one named (a model served from EFFICIENTNET_MODEL_PATH)."""
    if not is_model_name(name):
        raise BadRequest(f"'{name[:80]}' is not a model name (letters, digits, '_', '.', '-')")
    path = pipeline.settings.model_dir / f"{name}{SUFFIX}"
    if path.is_file():
        return path
    in_service = pipeline.session.path
    if in_service.stem == name:
        return in_service
    raise ModelNotFound(f"no model '{name}': {path} does not exist")


def _entries(pipeline: Pipeline) -> list[dict[str, Any]]:
    served = pipeline.session.metadata.model_name
    directory = pipeline.settings.model_dir
    names = {p.stem for p in directory.glob(f"*{SUFFIX}") if is_model_name(p.stem)}
    names.add(served)
    return [
        {"name": name, "version": MODEL_VERSION, "state": "READY"}
        if name == served
        else {"name": name, "state": "UNAVAILABLE", "reason": "not loaded"}
        for name in sorted(names)
    ]


@router.post(
    "/index",
    summary="The models in EFFICIENTNET_MODEL_DIR, and the one in service",
    responses=_errors(401),
)
async def index(pipeline: ReadyPipeline) -> Response:
    return json_response(_entries(pipeline))


@router.post(
    "/models/{model_name}/load",
    summary="Swap in <model dir>/<model_name>.onnx without dropping a request",
    responses=_errors(400, 401, 404, 409, 503),
)
async def load(pipeline: ReadyPipeline, model_name: str) -> Response:
    swap = await pipeline.swap(model_file(pipeline, model_name), expected_name=model_name)
    return json_response(
        {
            "name": swap.new,
            "replaced": swap.old,
            "sha256": swap.sha256,
            "load_seconds": round(swap.load_s, 3),
            "warm_up_seconds": round(swap.warm_s, 3),
        }
    )


@router.post(
    "/models/{model_name}/unload",
    summary="Refused: this server serves exactly one model (load another in its place)",
    responses=_errors(400, 401),
)
async def unload(request: Request, model_name: str) -> Response:
    raise BadRequest(
        f"model '{model_name[:80]}' not unloaded: this server serves exactly one model; "
        "load another in its place"
    )
