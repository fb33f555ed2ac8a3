"""The Open Inference Protocol's answer: which outputs a request asked for, checked before any
inference, and the response body (JSON, or JSON + raw bytes with the binary data extension)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import BadRequest
from service.oip.codec import Datatype, InferenceRequest, RequestedOutput, shown
from service.pipeline.ranking import DEFAULT_TOP_K, top_k

OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABELS = "labels"
HEADER_LENGTH_NAME = "Inference-Header-Content-Length"


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
            chosen = min(DEFAULT_TOP_K, classes) if asked in (None, 0) else asked
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


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: Datatype
    shape: list[int]
    values: np.ndarray | list[bytes]  # float32 array, or the BYTES elements row-major
    binary: bool


def classification_strings(probabilities: np.ndarray, labels: list[str], k: int) -> list[bytes]:
    """Triton's classification output, row-major: ``b"score:index:label"``, best first."""
    out = []
    for row in probabilities:
        for i in top_k(row, k):
            out.append(f"{row[i]:.6f}:{int(i)}:{labels[i]}".encode())
    return out


def _raw(output: OutputTensor) -> bytes:
    if isinstance(output.values, np.ndarray):
        return output.values.astype("<f4").tobytes()
    return b"".join(len(v).to_bytes(4, "little") + v for v in output.values)


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_response(
    model: str,
    version: str,
    request: InferenceRequest,
    outputs: list[OutputTensor],
    parameters: dict[str, Any],
) -> EncodedResponse:
    """The inference response: JSON, or JSON + raw bytes when any output is binary."""
    described, binary_parts = [], []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if output.binary:
            raw = _raw(output)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        elif isinstance(output.values, np.ndarray):
            entry["data"] = output.values.ravel()
        else:
            entry["data"] = [v.decode() for v in output.values]
        described.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id is not None:
        body["id"] = request.id
    if parameters:
        body["parameters"] = parameters
    body["outputs"] = described
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary_parts:
        return EncodedResponse(header, "application/json", {})
    return EncodedResponse(
        b"".join([header, *binary_parts]),
        "application/octet-stream",
        {HEADER_LENGTH_NAME: str(len(header))},
    )
