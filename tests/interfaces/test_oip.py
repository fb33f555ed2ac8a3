"""Open Inference Protocol v2 against the running service, with the official Triton client."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from photos import Photo
from server_process import LiveServer
from tritonclient.utils import InferenceServerException

from model_contract import Preprocessing
from service.pipeline.decode.image import preprocess

MODEL = "efficientnet_lite0"
CROP = 224


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(live_server.host_port, network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def spec(live_server: LiveServer) -> Preprocessing:
    meta = httpx.get(f"{live_server.url}/metadata", headers=live_server.auth).json()
    return Preprocessing.model_validate(meta["preprocessing"])


def classify_probabilities(server: LiveServer, path: Path) -> np.ndarray:
    """The full softmax from /classify (top_k=1000), indexed by class."""
    with path.open("rb") as f:
        response = httpx.post(
            f"{server.url}/classify",
            params={"top_k": 1000},
            files={"file": (path.name, f, "image/jpeg")},
            headers=server.auth,
            timeout=60,
        )
    response.raise_for_status()
    probabilities = np.zeros(1000)
    for p in response.json()["predictions"]:
        probabilities[p["index"]] = p["score"]
    return probabilities


def pixels(photo: Photo, spec: Preprocessing) -> np.ndarray:
    """The exact uint8 crop /classify computes for this photo."""
    return preprocess(photo.path.read_bytes(), spec, 50_000_000)


def infer(
    client: triton.InferenceServerClient,
    server: LiveServer,
    name: str,
    datatype: str,
    array: np.ndarray,
    binary: bool,
    outputs: list[triton.InferRequestedOutput] | None = None,
) -> triton.InferResult:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return client.infer(MODEL, [tensor], outputs=outputs, headers=server.auth)


def parse_label(entry: bytes | str) -> tuple[float, int, str]:
    text = entry.decode() if isinstance(entry, bytes) else entry
    score, index, label = text.split(":", 2)
    return float(score), int(index), label


def test_health_and_metadata(client: triton.InferenceServerClient, live_server: LiveServer) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    server = client.get_server_metadata()
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    meta = client.get_model_metadata(MODEL, headers=live_server.auth)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
    assert inputs == {
        "image": ("UINT8", [-1, CROP, CROP, 3]),
        "normalized_image": ("FP32", [-1, 3, CROP, CROP]),
        "encoded_image": ("BYTES", [-1]),
    }
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    assert outputs == {"probabilities": ("FP32", [-1, 1000]), "labels": ("BYTES", [-1, -1])}


def test_unknown_model_is_404_in_the_protocols_error_shape(
    client: triton.InferenceServerClient, live_server: LiveServer
) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'efficientnet_b7'") as err:
        client.get_model_metadata("efficientnet_b7", headers=live_server.auth)
    assert err.value.status() == "404"
    assert not client.is_model_ready("efficientnet_b7")
    response = httpx.get(f"{live_server.url}/v2/models/nope/ready")
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


def test_inference_needs_the_api_key_but_probes_do_not(
    client: triton.InferenceServerClient, live_server: LiveServer
) -> None:
    tensor = triton.InferInput("encoded_image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(InferenceServerException, match="API key") as err:
        client.infer(MODEL, [tensor])
    assert err.value.status() == "401"
    assert httpx.get(f"{live_server.url}/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_encoded_image_gives_the_same_answer_as_classify(
    client: triton.InferenceServerClient,
    live_server: LiveServer,
    photos: dict[str, Photo],
    binary: bool,
) -> None:
    photo = photos["chelsea"]
    data = photo.path.read_bytes()
    # JSON strings cannot carry raw bytes: in JSON the file goes base64-encoded.
    element = data if binary else base64.b64encode(data)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("labels", binary_data=binary, class_count=5),
    ]
    array = np.array([element], dtype=object)
    result = infer(client, live_server, "encoded_image", "BYTES", array, binary, outputs)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 1000)
    assert int(probabilities[0].argmax()) in photo.expected
    reference = classify_probabilities(live_server, photo.path)
    np.testing.assert_allclose(probabilities[0], reference, atol=1e-6)
    labels = result.as_numpy("labels")
    assert labels.shape == (1, 5)
    ranked = [parse_label(e) for e in labels[0]]
    assert [i for _, i, _ in ranked] == list(np.argsort(-reference)[:5])
    assert ranked[0][0] == pytest.approx(reference.max(), abs=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_uint8_pixels_batch_matches_classify_per_image(
    client: triton.InferenceServerClient,
    live_server: LiveServer,
    photos: dict[str, Photo],
    spec: Preprocessing,
    binary: bool,
) -> None:
    chosen = [photos["chelsea"], photos["coffee"]]
    batch = np.stack([pixels(p, spec) for p in chosen])
    # No outputs named: tritonclient then asks for every output in binary (binary_data_output).
    result = infer(client, live_server, "image", "UINT8", batch, binary)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 1000)
    for row, photo in zip(probabilities, chosen, strict=True):
        assert int(row.argmax()) in photo.expected
        np.testing.assert_allclose(row, classify_probabilities(live_server, photo.path), atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_normalized_fp32_is_quantized_back_to_the_same_pixels(
    client: triton.InferenceServerClient,
    live_server: LiveServer,
    photos: dict[str, Photo],
    spec: Preprocessing,
    binary: bool,
) -> None:
    image = pixels(photos["rocket"], spec)[None]
    x = image.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255)
    x = (x - np.float32(spec.mean)[:, None, None]) / np.float32(spec.std)[:, None, None]
    result = infer(client, live_server, "normalized_image", "FP32", x.astype(np.float32), binary)
    probabilities = result.as_numpy("probabilities")
    assert int(probabilities[0].argmax()) in photos["rocket"].expected
    reference = infer(client, live_server, "image", "UINT8", image, True).as_numpy("probabilities")
    np.testing.assert_array_equal(probabilities, reference)  # the same pixels, bit for bit
    assert result.get_response()["parameters"]["pixel_rounding_max_error"] < 1e-3


def test_unnormalized_fp32_is_refused(
    client: triton.InferenceServerClient, live_server: LiveServer
) -> None:
    raw_pixels = np.full((1, 3, CROP, CROP), 128.0, dtype=np.float32)  # forgot to normalize
    with pytest.raises(InferenceServerException, match="outside what") as err:
        infer(client, live_server, "normalized_image", "FP32", raw_pixels, True)
    assert err.value.status() == "400"


def test_labels_output_with_a_top_k_parameter_in_plain_json(
    live_server: LiveServer, photos: dict[str, Photo]
) -> None:
    encoded = base64.b64encode(photos["coffee"].path.read_bytes()).decode()
    body = {
        "id": "req-7",
        "inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES", "data": [encoded]}],
        "outputs": [{"name": "labels", "parameters": {"top_k": 3}}],
    }
    response = httpx.post(
        f"{live_server.url}/v2/models/{MODEL}/infer", json=body, headers=live_server.auth
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "req-7" and answer["model_name"] == MODEL
    (labels,) = answer["outputs"]
    assert (labels["name"], labels["datatype"], labels["shape"]) == ("labels", "BYTES", [1, 3])
    scores = [parse_label(e)[0] for e in labels["data"]]
    assert scores == sorted(scores, reverse=True)
    assert parse_label(labels["data"][0])[1] in photos["coffee"].expected


def _image_tensor(shape: list[int], count: int, **overrides: Any) -> dict[str, Any]:
    return {"name": "image", "shape": shape, "datatype": "UINT8", "data": [0] * count, **overrides}


FULL = CROP * CROP * 3
BAD_REQUESTS = {
    "wrong datatype": (
        {"inputs": [_image_tensor([1, CROP, CROP, 3], FULL, datatype="FP32")]},
        "input 'image' must be UINT8, got datatype 'FP32'",
    ),
    "wrong shape": (
        {"inputs": [_image_tensor([1, 100, 100, 3], 30000)]},
        "input 'image' must have shape [N, 224, 224, 3]",
    ),
    "size mismatch": (
        {"inputs": [_image_tensor([1, CROP, CROP, 3], 10)]},
        "needs 150528 values, got 10",
    ),
    "unknown input": (
        {"inputs": [_image_tensor([1], 1, name="pixels")]},
        "unknown input 'pixels'",
    ),
    "two inputs": (
        {"inputs": [_image_tensor([1, CROP, CROP, 3], FULL)] * 2},
        "send exactly one input",
    ),
    "pixel out of range": (
        {"inputs": [_image_tensor([1, CROP, CROP, 3], FULL, data=[300] * FULL)]},
        "must hold integers 0..255",
    ),
    "not base64": (
        {"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES", "data": ["%%"]}]},
        "is not base64",
    ),
    "unknown output": (
        {"inputs": [_image_tensor([1, CROP, CROP, 3], FULL)], "outputs": [{"name": "logits"}]},
        "unknown output 'logits'",
    ),
    "k too large": (
        {
            "inputs": [_image_tensor([1, CROP, CROP, 3], FULL)],
            "outputs": [{"name": "labels", "parameters": {"classification": 5000}}],
        },
        "must be an integer from 1 to 1000",
    ),
    "no inputs": ({"inputs": []}, "invalid inference request"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_invalid_requests_get_400_with_a_clear_message(live_server: LiveServer, case: str) -> None:
    body, message = BAD_REQUESTS[case]
    response = httpx.post(
        f"{live_server.url}/v2/models/{MODEL}/infer", json=body, headers=live_server.auth
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert isinstance(error, str) and message in error


def test_binary_section_that_disagrees_with_the_header_is_refused(live_server: LiveServer) -> None:
    header = b'{"inputs":[{"name":"image","shape":[1,224,224,3],"datatype":"UINT8",'
    header += b'"parameters":{"binary_data_size":150528}}]}'
    response = httpx.post(
        f"{live_server.url}/v2/models/{MODEL}/infer",
        content=header + bytes(1000),
        headers={**live_server.auth, "Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "holds 1000 bytes" in response.json()["error"]


def test_a_file_that_is_not_an_image_is_refused_like_classify_does(
    client: triton.InferenceServerClient, live_server: LiveServer
) -> None:
    array = np.array([b"GIF89a? no, just text"], dtype=object)
    with pytest.raises(InferenceServerException, match=r"encoded_image'\[0\]") as err:
        infer(client, live_server, "encoded_image", "BYTES", array, True)
    assert err.value.status() in ("400", "415")
