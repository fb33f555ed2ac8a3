"""The exporter's files and the contract the service reads them with (model_contract) agree
field for field: the metadata an export writes validates and survives a round trip through
`ModelMetadata` unchanged, so a field written on one side only fails here; and the graph's
boundary is the one the contract names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest

from model_contract import (
    BATCH_AXIS,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    SCHEMA_VERSION,
    ModelMetadata,
    WeightsInfo,
)

# The shared session fixtures (tests/conftest.py): an ImageNet graph and a random-weights one.
GRAPHS = ["lite0_onnx", "b0_random_onnx"]


@pytest.fixture(params=GRAPHS)
def graph(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


def raw_metadata(path: Path) -> dict[str, Any]:
    """The JSON under METADATA_KEY, as written (no model of ours in between)."""
    proto = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])


def round_trip_differences(
    raw: dict[str, Any], contract: type[ModelMetadata] = ModelMetadata
) -> list[str]:
    """Where `raw` differs from itself read with `contract` and written back: a field only
    the file has, a field only the contract has, or a value the contract changes. [] when
    `json.loads(contract.model_validate(raw).to_json()) == raw`."""
    again = json.loads(contract.model_validate(raw).to_json())
    return _differences(raw, again, "")


def _differences(written: Any, read: Any, where: str) -> list[str]:
    if isinstance(written, dict) and isinstance(read, dict):
        out = [f"{where}{k}: written, not in the contract" for k in written if k not in read]
        out += [f"{where}{k}: in the contract, not written" for k in read if k not in written]
        for k in written.keys() & read.keys():
            out += _differences(written[k], read[k], f"{where}{k}.")
        return out
    if written != read:
        return [f"{where.rstrip('.')}: written {written!r}, read back {read!r}"]
    return []


def test_the_written_metadata_is_exactly_the_contracts(graph):
    raw = raw_metadata(graph)
    assert round_trip_differences(raw) == []
    assert json.loads(ModelMetadata.model_validate(raw).to_json()) == raw


def test_the_contracts_reader_accepts_the_file(graph):
    """What the service checks when it loads a model, read with the contract alone."""
    proto = onnx.load(str(graph), load_external_data=False)
    meta = ModelMetadata.model_validate_json(
        {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]
    )
    assert meta.schema_version == SCHEMA_VERSION and f"{meta.model_name}.onnx" == graph.name
    assert meta.verification is not None and meta.exporter is not None
    ((image,), (logits,)) = proto.graph.input, proto.graph.output
    assert (image.name, logits.name) == (INPUT_NAME, OUTPUT_NAME)
    image_dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    logits_dims = [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim]
    crop = meta.preprocessing.crop_size
    assert image_dims == [BATCH_AXIS, crop, crop, 3]
    assert logits_dims == [BATCH_AXIS, len(meta.labels)]


# --- the check fails when a field is added on one side only ---------------------------


@pytest.mark.parametrize("where", [(), ("weights",), ("verification",)])
def test_a_field_only_the_exporter_writes_fails_the_check(b0_random_onnx, where):
    raw = raw_metadata(b0_random_onnx)
    assert round_trip_differences(raw) == []
    part = raw
    for key in where:
        part = part[key]
    part["calibration_photos"] = 6  # a new field, written by the exporter only
    path = ".".join([*where, "calibration_photos"])
    assert round_trip_differences(raw) == [f"{path}: written, not in the contract"]


class _GrownWeights(WeightsInfo):
    revision: str | None = None  # a new field the exporter does not write


class _GrownContract(ModelMetadata):
    calibration_photos: int = 0  # a new field the exporter does not write


class _GrownNestedContract(ModelMetadata):
    weights: _GrownWeights


@pytest.mark.parametrize(
    ("contract", "path"),
    [(_GrownContract, "calibration_photos"), (_GrownNestedContract, "weights.revision")],
)
def test_a_field_only_the_contract_has_fails_the_check(b0_random_onnx, contract, path):
    raw = raw_metadata(b0_random_onnx)
    assert round_trip_differences(raw) == []
    assert round_trip_differences(raw, contract) == [f"{path}: in the contract, not written"]
