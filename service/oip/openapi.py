"""What the Open Inference Protocol's routes document in the OpenAPI schema (their handlers
build their JSON by hand, with orjson)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.api.errors import error_responses
from service.api.schemas import ErrorResponse
from service.oip.codec import INPUT_KINDS


class OipError(BaseModel):
    """The protocol's error shape."""

    error: str


class OipReady(BaseModel):
    ready: bool


class OipModelReady(BaseModel):
    name: str
    ready: bool


# The protocol's own words where they differ from the service's (service/api/errors.py).
_DESCRIBED = {
    400: "malformed inference request (JSON, shapes, datatypes, binary sections)",
    404: "unknown model name or version",
    415: "Content-Encoding other than identity, or an image format the service does not decode",
}


def oip_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(*codes, model=OipError, described=_DESCRIBED)


def body_limit_errors() -> dict[int | str, dict[str, Any]]:
    """Refused by the body-limit middleware before routing, in the service's own error shape
    (a declared Content-Length over the limit), or inside the route, in the protocol's."""
    return error_responses(408, 413, model=OipError | ErrorResponse)


TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "enum": list(INPUT_KINDS)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": [k.datatype for k in INPUT_KINDS.values()]},
        "parameters": {"type": "object"},
        "data": {"description": "flat or nested row-major values; BYTES: base64 strings"},
    },
}
INFER_BODY: dict[str, Any] = {
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
                        "inputs": {"type": "array", "minItems": 1, "items": TENSOR_SCHEMA},
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
