"""The Open Inference Protocol v2's request wire format, as pure functions (no HTTP, no pipeline).

What arrives for the one served model: the tensor names and datatypes, the request's JSON
(pydantic models), the binary tensor data extension (splitting the body, each input's binary
section, Triton's length-prefixed BYTES), decoding an input's elements (UINT8/FP32 values, BYTES
files), and turning a ``normalized_image`` FP32 tensor back into 8-bit pixels. Every refusal is a
``BadRequest`` naming the offending tensor. The answer's side is ``outputs.py``; the routes that
use both are ``routes.py``, whose docstring describes the protocol as this server speaks it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import BadRequest

HEADER_LENGTH = "inference-header-content-length"

INPUT_PIXELS = "image"
INPUT_NORMALIZED = "normalized_image"
INPUT_ENCODED = "encoded_image"

Datatype = Literal["UINT8", "FP32", "BYTES"]
# Wire byte order is little-endian (the protocol's binary extension).
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {"UINT8": np.dtype("u1"), "FP32": np.dtype("<f4")}


# --- The request as it arrives (the protocol's JSON, validated at the edge) --------------------


# Bounds on what a request may carry: the model takes one input and has two outputs, so these
# only stop a request that lists thousands (all parsed, validated and echoed in errors before).
MAX_TENSORS = 8
MAX_JSON_OBJECTS = 256  # '{' in the JSON header, string contents included (a generous bound)
MAX_RANK = 8
MAX_NAME = 256
SHOWN_NAME = 64  # a name quoted in an error message is cut to this


def shown(name: str) -> str:
    """A client-chosen name as quoted in an error: never a huge echo."""
    return name if len(name) <= SHOWN_NAME else name[:SHOWN_NAME] + "…"


class Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=MAX_NAME)
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=MAX_RANK)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=MAX_NAME)
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestedOutput] | None = Field(default=None, max_length=MAX_TENSORS)


@dataclass(frozen=True)
class InputKind:
    name: str
    datatype: Datatype
    description: str

    def shape(self, crop: int) -> list[int]:
        """The metadata shape; -1 is the batch axis."""
        return {
            INPUT_PIXELS: [-1, crop, crop, 3],
            INPUT_NORMALIZED: [-1, 3, crop, crop],
            INPUT_ENCODED: [-1],
        }[self.name]

    def check_shape(self, shape: list[int], crop: int, max_images: int) -> int:
        """The batch size N, or BadRequest naming the expected shape."""
        expected = self.shape(crop)
        ok = len(shape) == len(expected) and all(
            e == -1 or s == e for s, e in zip(shape, expected, strict=True)
        )
        if self.name == INPUT_ENCODED and len(shape) == 2 and shape[1] == 1:
            ok = True  # [N, 1]: Triton's image client sends BYTES with a trailing unit axis
        if not ok:
            raise BadRequest(
                f"input '{self.name}' must have shape {_shape_text(expected)} "
                f"(-1 = any batch size), got {shape}"
            )
        n = shape[0]
        if not 1 <= n <= max_images:
            raise BadRequest(
                f"input '{self.name}' holds {n} images; send 1 to {max_images} per request "
                "(EFFICIENTNET_MAX_BATCH_FILES)"
            )
        return n


INPUT_KINDS = {
    k.name: k
    for k in (
        InputKind(INPUT_PIXELS, "UINT8", "RGB pixels, resized and center-cropped (NHWC)"),
        InputKind(INPUT_NORMALIZED, "FP32", "(pixels/255 - mean)/std, NCHW; rounded to 8 bits"),
        InputKind(INPUT_ENCODED, "BYTES", "encoded image files (base64 in JSON)"),
    )
}


def _shape_text(shape: list[int]) -> str:
    return "[" + ", ".join("N" if s == -1 else str(s) for s in shape) + "]"


# --- Request body → (request, one input's elements) --------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor section) per the binary tensor data extension."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length!r} is not a number"
        ) from None
    if not 0 < n <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes"
        )
    return body[:n], body[n:]


def parse_request(header: bytes) -> InferenceRequest:
    # Parsing holds the GIL (orjson: ~1 s for a 12 MB body of 200,000 tensors, which stalls the
    # event loop even from a thread). A request of this protocol holds a few dozen objects;
    # counting braces runs at memchr speed and refuses such a body before it is parsed.
    objects = header.count(b"{")
    if objects > MAX_JSON_OBJECTS:
        raise BadRequest(
            f"the inference request holds {objects} JSON objects; at most {MAX_JSON_OBJECTS} "
            "(this model takes one input and has two outputs)"
        )
    try:
        raw = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"the inference request is not valid JSON ({exc}); binary tensor data needs the "
            "Inference-Header-Content-Length header"
        ) from None
    _check_counts(raw)
    try:
        return InferenceRequest.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(f"invalid inference request: {_describe(exc)}") from None


def _check_counts(raw: Any) -> None:
    """Refuse thousands of inputs/outputs before validating each one (seconds for 200,000)."""
    if not isinstance(raw, dict):
        return
    for key in ("inputs", "outputs"):
        items = raw.get(key)
        if isinstance(items, list) and len(items) > MAX_TENSORS:
            raise BadRequest(
                f"'{key}' lists {len(items)} tensors; at most {MAX_TENSORS} (this model takes "
                "one input and has two outputs)"
            )


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def binary_sections(inputs: list[Tensor], binary: bytes) -> list[bytes | None]:
    """Each input's slice of the binary section, in input order (None: data is in the JSON)."""
    sections: list[bytes | None] = []
    offset = 0
    for tensor in inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            sections.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(f"input '{tensor.name}': binary_data_size must be an integer ≥ 0")
        if tensor.data is not None:
            raise BadRequest(f"input '{tensor.name}' has both JSON data and binary_data_size")
        sections.append(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise BadRequest(
            f"the binary section holds {len(binary)} bytes but the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return sections


def _flatten(tensor: Tensor) -> list[Any]:
    """The protocol allows tensor data flat or nested (row-major); flatten either.

    Iterative, and no deeper than the tensor's rank: data nested a thousand deep used to
    overflow the recursion (a 500) instead of being the client's error (400).
    """
    data = tensor.data
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(d, list) for d in data):
        return data
    flat: list[Any] = []
    stack: list[tuple[Iterator[Any], int]] = [(iter(data), 1)]
    while stack:
        items, depth = stack[-1]
        for item in items:
            if isinstance(item, list):
                if depth >= max(len(tensor.shape), 1):
                    raise BadRequest(
                        f"input '{shown(tensor.name)}': data nested deeper than its shape's "
                        f"{len(tensor.shape)} dimensions"
                    )
                stack.append((iter(item), depth + 1))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def decode_numeric(tensor: Tensor, raw: bytes | None, count: int) -> np.ndarray:
    """A UINT8/FP32 tensor's elements as a flat array of exactly ``count`` values."""
    dtype = NUMPY_DTYPES[tensor.datatype]
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(
                f"input '{tensor.name}' of shape {tensor.shape} needs {count * dtype.itemsize} "
                f"bytes of {tensor.datatype}, got {len(raw)}"
            )
        return np.frombuffer(raw, dtype=dtype)
    values = _flatten(tensor)
    if len(values) != count:
        raise BadRequest(
            f"input '{tensor.name}' of shape {tensor.shape} needs {count} values, got {len(values)}"
        )
    if tensor.datatype == "UINT8":
        # Integers only: a float or a bool here is a client bug, not something to round.
        if not all(type(v) is int and 0 <= v <= 255 for v in values):
            raise BadRequest(f"input '{tensor.name}' (UINT8) must hold integers 0..255")
        return np.asarray(values, dtype=np.uint8)
    if not all(type(v) in (int, float) for v in values):
        raise BadRequest(f"input '{tensor.name}' (FP32) must hold numbers")
    return np.asarray(values, dtype=np.float32)


def decode_bytes(tensor: Tensor, raw: bytes | None, count: int) -> list[bytes]:
    """A BYTES tensor's elements: length-prefixed in binary, base64 strings in JSON."""
    if raw is not None:
        elements = split_length_prefixed(tensor.name, raw)
    else:
        elements = []
        for i, value in enumerate(_flatten(tensor)):
            if not isinstance(value, str):
                raise BadRequest(f"input '{tensor.name}'[{i}] must be a base64 string in JSON")
            try:
                elements.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                raise BadRequest(
                    f"input '{tensor.name}'[{i}] is not base64; in JSON, BYTES elements carry the "
                    "image file base64-encoded (or send it raw with the binary data extension)"
                ) from None
    if len(elements) != count:
        raise BadRequest(
            f"input '{tensor.name}' of shape {tensor.shape} needs {count} elements, "
            f"got {len(elements)}"
        )
    return elements


def split_length_prefixed(name: str, raw: bytes) -> list[bytes]:
    """Triton's BYTES serialization: each element is a 4-byte little-endian length + bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input '{name}': truncated BYTES element length at byte {offset}")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        start, offset = offset + 4, offset + 4 + size
        if offset > len(raw):
            raise BadRequest(f"input '{name}': BYTES element at byte {start - 4} overruns the data")
        elements.append(raw[start:offset])
    return elements


# --- FP32 normalized tensors back to 8-bit pixels ----------------------------------------------


@dataclass(frozen=True)
class Pixels:
    images: np.ndarray  # uint8 [N, crop, crop, 3]
    rounding_max_error: float  # in pixel levels; 0 when the tensor came from 8-bit pixels


def normalized_to_pixels(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Pixels:
    """Invert ``(p/255 - mean)/std`` for NCHW ``x`` and round to uint8 NHWC (service.oip)."""
    if not np.isfinite(x).all():
        raise BadRequest(f"input '{INPUT_NORMALIZED}' holds NaN or infinite values")
    # float64: the inversion itself must not add error on top of the client's float32.
    m = np.asarray(mean, dtype=np.float64)[None, :, None, None]
    s = np.asarray(std, dtype=np.float64)[None, :, None, None]
    levels = (x.astype(np.float64) * s + m) * 255.0
    low, high = float(levels.min()), float(levels.max())
    if low < -0.5 or high > 255.5:
        lo = (0 - np.asarray(mean)) / np.asarray(std)
        hi = (1 - np.asarray(mean)) / np.asarray(std)
        raise BadRequest(
            f"input '{INPUT_NORMALIZED}' is outside what (pixels/255 - mean)/std can give with "
            f"mean={list(mean)}, std={list(std)}: per channel the range is "
            f"{[round(float(v), 4) for v in lo]}..{[round(float(v), 4) for v in hi]}; "
            f"these values map to pixel levels {low:.2f}..{high:.2f} (allowed 0..255)"
        )
    rounded = np.rint(levels)
    error = float(np.abs(levels - rounded).max())
    images = np.clip(rounded, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return Pixels(np.ascontiguousarray(images), error)
