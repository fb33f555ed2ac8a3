"""Your own classes, the service side: any class count ≥ 2, the model's name from its file, the
variant from the file when EFFICIENTNET_MODEL_PATH names it, older files without a name.

The graphs are the real Lite0 with a 3-class head (tests/service/custom_graphs.py), in-process;
the exporter-made 5-class model over a real process is tests/interfaces/test_custom_model.py.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from custom_graphs import PHOTO_CLASS, THREE_CLASSES, derive
from service_helpers import assert_error, in_process, settings_for

from service.config import load_settings
from service.errors import StartupError
from service.pipeline.session import ModelSession

session_loop = pytest.mark.asyncio(loop_scope="session")
JPEG = {"content-type": "image/jpeg"}
NAME = "pets-and-things"
LABELS = list(THREE_CLASSES)


@pytest.fixture(scope="session")
def three_class_onnx(lite0_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("custom") / f"{NAME}.onnx"
    return derive(lite0_onnx, target, classes=THREE_CLASSES, metadata={"name": NAME})


@pytest.fixture(scope="session")
async def three(three_class_onnx: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The 3-class model, found by EFFICIENTNET_MODEL_PATH alone (no EFFICIENTNET_VARIANT)."""
    async with in_process(settings_for(three_class_onnx, variant=None)) as client:
        yield client


def _labels(body: dict[str, Any]) -> list[str]:
    return [p["label"] for p in body["predictions"]]


@session_loop
@pytest.mark.parametrize("photo", sorted(PHOTO_CLASS))
async def test_classify_default_top_k_is_every_class_of_a_smaller_model(
    three: httpx.AsyncClient, photo_bytes: dict[str, bytes], photo: str
) -> None:
    response = await three.post("/classify", content=photo_bytes[photo], headers=JPEG)
    assert response.status_code == 200, response.text
    body = response.json()
    # Default top-5 on a 3-class model: all three, not a crash and not a 422.
    assert sorted(_labels(body)) == sorted(LABELS)
    assert body["predictions"][0]["label"] == PHOTO_CLASS[photo]
    assert [p["index"] for p in body["predictions"]] == [
        LABELS.index(p["label"]) for p in body["predictions"]
    ]
    assert sum(p["score"] for p in body["predictions"]) == pytest.approx(1.0, abs=1e-6)


@session_loop
async def test_top_k_is_bounded_by_the_class_count(
    three: httpx.AsyncClient, photo_bytes: dict[str, bytes]
) -> None:
    jpeg = photo_bytes["chelsea"]
    two = await three.post("/classify?top_k=2", content=jpeg, headers=JPEG)
    assert _labels(two.json()) == _labels((await three.post("/classify", content=jpeg)).json())[:2]
    for k in (4, 5, 1000):
        error = assert_error(
            await three.post(f"/classify?top_k={k}", content=jpeg, headers=JPEG),
            422,
            "invalid_request",
        )
        assert "top_k" in error["message"] and "from 1 to 3" in error["message"], error
        assert f"got {k}" in error["message"]
    assert_error(await three.post("/classify?top_k=0", content=jpeg), 422, "invalid_request")
    # ... and it keeps serving.
    assert (await three.post("/classify?top_k=3", content=jpeg, headers=JPEG)).status_code == 200


@session_loop
async def test_batch_with_a_smaller_model(
    three: httpx.AsyncClient, photo_bytes: dict[str, bytes]
) -> None:
    files = [("file", (f"{p}.jpg", photo_bytes[p], "image/jpeg")) for p in sorted(PHOTO_CLASS)]
    response = await three.post("/classify/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["result"]["predictions"][0]["label"] for r in results] == [
        PHOTO_CLASS[p] for p in sorted(PHOTO_CLASS)
    ]
    assert all(len(r["result"]["predictions"]) == 3 for r in results)
    error = assert_error(
        await three.post("/classify/batch?top_k=4", files=files), 422, "invalid_request"
    )
    assert "from 1 to 3" in error["message"]


@session_loop
async def test_metadata_and_ready_name_the_model(three: httpx.AsyncClient) -> None:
    body = (await three.get("/metadata")).json()
    assert body["name"] == NAME
    assert body["variant"] == "lite0" and body["label_count"] == 3
    assert (await three.get("/readyz")).json()["variant"] == "lite0"


@session_loop
async def test_oip_serves_the_model_under_its_own_name(
    three: httpx.AsyncClient, photo_bytes: dict[str, bytes]
) -> None:
    meta = await three.get(f"/v2/models/{NAME}")
    assert meta.status_code == 200, meta.text
    outputs = {o["name"]: o for o in meta.json()["outputs"]}
    assert meta.json()["name"] == NAME
    assert outputs["probabilities"]["shape"] == [-1, 3]
    assert (await three.get(f"/v2/models/{NAME}/ready")).json() == {"name": NAME, "ready": True}
    unknown = await three.get("/v2/models/efficientnet_lite0")
    assert unknown.status_code == 404 and NAME in unknown.json()["error"]

    images = [photo_bytes["chelsea"], photo_bytes["rocket"]]
    request = {
        "inputs": [
            {
                "name": "encoded_image",
                "shape": [2],
                "datatype": "BYTES",
                "data": [base64.b64encode(b).decode() for b in images],
            }
        ],
        "outputs": [{"name": "probabilities"}, {"name": "labels"}],
    }
    response = await three.post(f"/v2/models/{NAME}/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == NAME
    by_name = {o["name"]: o for o in body["outputs"]}
    probabilities = np.asarray(by_name["probabilities"]["data"]).reshape(2, 3)
    assert by_name["probabilities"]["shape"] == [2, 3]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == ["cat", "rocket"]
    # labels without a classification count: every class of a 3-class model, best first.
    assert by_name["labels"]["shape"] == [2, 3]
    assert by_name["labels"]["data"][0].endswith(":0:cat")

    request["outputs"] = [{"name": "labels", "parameters": {"classification": 4}}]
    refused = await three.post(f"/v2/models/{NAME}/infer", json=request)
    assert refused.status_code == 400 and "from 1 to 3" in refused.json()["error"]


@session_loop
async def test_a_file_without_a_name_is_served_as_efficientnet_variant(
    lite0_onnx: Path, tmp_path: Path, photo_bytes: dict[str, bytes]
) -> None:
    older = derive(lite0_onnx, tmp_path / "older.onnx", drop=["name"])
    async with in_process(settings_for(older, variant=None)) as client:
        assert (await client.get("/metadata")).json()["name"] == "efficientnet_lite0"
        meta = await client.get("/v2/models/efficientnet_lite0")
        assert meta.status_code == 200 and meta.json()["outputs"][0]["shape"] == [-1, 1000]
        response = await client.post("/classify", content=photo_bytes["chelsea"], headers=JPEG)
        assert len(response.json()["predictions"]) == 5


def test_the_variant_comes_from_the_file_the_service_has_no_list(
    lite0_onnx: Path, tmp_path: Path
) -> None:
    # A variant no table of the service's knows (the exporter's newer b8/l2, or later ones).
    for variant in ("l2", "b8", "future_9"):
        meta = {"variant": variant, "name": f"mine_{variant}"}
        path = derive(lite0_onnx, tmp_path / f"{variant}.onnx", metadata=meta)
        session = ModelSession.load(settings_for(path, variant=None))
        assert session.metadata.variant == variant
        assert session.metadata.model_name == f"mine_{variant}"
        assert ModelSession.load(settings_for(path, variant=variant)).metadata.variant == variant
    path = tmp_path / "l2.onnx"
    with pytest.raises(StartupError, match="holds variant 'l2' but EFFICIENTNET_VARIANT is 'b3'"):
        ModelSession.load(settings_for(path, variant="b3"))


def test_variant_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("EFFICIENTNET_")]:
        monkeypatch.delenv(key)
    defaults = load_settings()
    assert defaults.variant is None and defaults.expected_variant == "lite0"
    assert defaults.resolved_model_path == Path("models/efficientnet_lite0.onnx")
    monkeypatch.setenv("EFFICIENTNET_MODEL_PATH", "d/flowers.onnx")
    by_path = load_settings()
    assert by_path.expected_variant is None and by_path.resolved_model_path == Path(
        "d/flowers.onnx"
    )
    monkeypatch.setenv("EFFICIENTNET_VARIANT", "")  # a compose file's "unset"
    assert load_settings().expected_variant is None
    monkeypatch.setenv("EFFICIENTNET_VARIANT", "l2")
    assert load_settings().expected_variant == "l2"
    monkeypatch.delenv("EFFICIENTNET_MODEL_PATH")
    assert load_settings().resolved_model_path == Path("models/efficientnet_l2.onnx")
    for bad in ("B3", "../b3", "b 3"):
        monkeypatch.setenv("EFFICIENTNET_VARIANT", bad)
        with pytest.raises(StartupError, match=f"invalid EFFICIENTNET_VARIANT={bad!r}"):
            load_settings()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"classes": {"only": (281,)}}, "labels: List should have at least 2 items"),
        ({"metadata": {"name": "../flowers"}}, "name: String should match pattern"),
        ({"metadata": {"variant": "B0"}}, "variant: String should match pattern"),
    ],
)
def test_files_off_the_contract_are_refused(
    lite0_onnx: Path, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    path = derive(lite0_onnx, tmp_path / "bad.onnx", **change)
    with pytest.raises(StartupError, match=expected):
        ModelSession.load(settings_for(path, variant=None))
