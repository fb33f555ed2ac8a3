"""``GET /metadata``'s limits: counts are JSON integers, in the schema and on the wire."""

from __future__ import annotations

import httpx

from service.api.schemas import MetadataResponse
from service.config import Settings

COUNTS = ("max_upload_bytes", "max_image_pixels", "max_batch_files")


def test_the_schema_types_the_counts_as_integers() -> None:
    schema = MetadataResponse.model_json_schema()
    limits = schema["$defs"]["Limits"]["properties"]
    assert {name: limits[name]["type"] for name in COUNTS} == dict.fromkeys(COUNTS, "integer")
    assert limits["request_timeout_s"]["type"] == "number"


async def test_metadata_answers_integer_counts(lite0: httpx.AsyncClient) -> None:
    response = await lite0.get("/metadata")
    assert response.status_code == 200
    limits = response.json()["limits"]
    defaults = Settings.model_fields
    for name in COUNTS:
        value = limits[name]
        # 20971520.0 would parse as a float: the type is the test.
        assert type(value) is int, f"{name} is {value!r}, not an integer"
        assert value == defaults[name].default
    assert limits["request_timeout_s"] == defaults["request_timeout_s"].default
