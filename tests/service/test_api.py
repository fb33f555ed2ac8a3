"""Every endpoint and every error, with httpx against the real app (lifespan run)
serving the packaged ImageNet Lite0 graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import onnxruntime as ort
import pytest
from PIL import Image
from service_helpers import (
    assert_error,
    encode,
    in_process,
    metric_value,
    scores,
    settings_for,
    top1,
)

from service.app import create_app

pytestmark = pytest.mark.asyncio(loop_scope="session")
JPEG = {"content-type": "image/jpeg"}


async def test_health_and_ready(lite0: httpx.AsyncClient) -> None:
    assert (await lite0.get("/healthz")).json() == {"status": "ok"}
    ready = await lite0.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "variant": "lite0", "provider": "CPUExecutionProvider"}


async def test_metadata(lite0: httpx.AsyncClient, lite0_onnx: Path) -> None:
    import hashlib

    body = (await lite0.get("/metadata")).json()
    assert body["variant"] == "lite0" and body["resolution"] == 224
    assert body["preprocessing"]["crop_size"] == 224
    assert body["providers"] == ["CPUExecutionProvider"]
    assert body["provider"] == "CPUExecutionProvider"
    assert body["label_count"] == 1000
    assert body["model_sha256"] == hashlib.sha256(lite0_onnx.read_bytes()).hexdigest()
    assert body["onnxruntime_version"] == ort.__version__
    assert body["batching"]["max_batch_size"] >= 1 and body["batching"]["max_queue"] >= 1
    assert body["weights"]["source"] == "imagenet"


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket", "motorcycle"])
async def test_classify_multipart_real_photos(
    lite0: httpx.AsyncClient, photos: dict[str, Any], name: str
) -> None:
    data = photos[name].path.read_bytes()
    response = await lite0.post("/classify", files={"file": (f"{name}.jpg", data, "image/jpeg")})
    assert top1(response) in photos[name].expected
    body = response.json()
    assert body["variant"] == "lite0"
    predictions = body["predictions"]
    assert len(predictions) == 5
    values = [p["score"] for p in predictions]
    assert values == sorted(values, reverse=True) and 0 < sum(values) <= 1.0 + 1e-6
    assert all(isinstance(p["label"], str) and p["label"] for p in predictions)
    assert set(body["timing_ms"]) == {
        "preprocess",
        "queue_wait",
        "inference",
        "total",
        "batch_size",
    }


async def test_classify_raw_body_and_top_k(
    lite0: httpx.AsyncClient, photo_bytes: dict[str, bytes]
) -> None:
    data = photo_bytes["coffee"]
    multipart = await lite0.post("/classify", files={"file": ("c.jpg", data, "image/jpeg")})
    raw = await lite0.post("/classify?top_k=3", content=data, headers=JPEG)
    octet = await lite0.post(
        "/classify?top_k=1000", content=data, headers={"content-type": "application/octet-stream"}
    )
    assert len(raw.json()["predictions"]) == 3
    assert list(scores(raw).items()) == list(scores(multipart).items())[:3]
    everything = octet.json()["predictions"]
    assert len(everything) == 1000 and len({p["index"] for p in everything}) == 1000
    assert abs(sum(p["score"] for p in everything) - 1.0) < 1e-5


async def test_classify_batch_in_order_with_per_file_errors(
    lite0: httpx.AsyncClient, photos: dict[str, Any]
) -> None:
    files = [
        ("file", ("chelsea.jpg", photos["chelsea"].path.read_bytes(), "image/jpeg")),
        ("file", ("notes.txt", b"not an image at all", "text/plain")),
        ("file", ("coffee.jpg", photos["coffee"].path.read_bytes(), "image/jpeg")),
        ("file", ("empty.png", b"", "image/png")),
        ("file", ("cut.jpg", photos["rocket"].path.read_bytes()[:3000], "image/jpeg")),
    ]
    response = await lite0.post("/classify/batch?top_k=2", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [f[1][0] for f in files]
    assert [r["status_code"] for r in results] == [200, 415, 200, 400, 400]
    assert results[0]["result"]["predictions"][0]["index"] in photos["chelsea"].expected
    assert results[2]["result"]["predictions"][0]["index"] in photos["coffee"].expected
    assert len(results[0]["result"]["predictions"]) == 2
    assert [r["error"]["code"] for r in results if r["error"]] == [
        "unsupported_media_type",
        "empty_body",
        "bad_image",
    ]
    assert all((r["result"] is None) != (r["error"] is None) for r in results)


async def test_batch_file_count_is_bounded(
    lite0: httpx.AsyncClient, photo_bytes: dict[str, bytes]
) -> None:
    files = [("file", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(33)]  # default limit 32
    assert_error(await lite0.post("/classify/batch", files=files), 400, "bad_request")
    assert_error(
        await lite0.post("/classify/batch", content=b"x", headers=JPEG),
        415,
        "unsupported_media_type",
    )
    no_file = await lite0.post("/classify/batch", data={"other": "x"}, files={"nope": ("a", b"x")})
    assert_error(no_file, 400, "bad_request")


async def test_input_errors(lite0: httpx.AsyncClient, photo_bytes: dict[str, bytes]) -> None:
    jpeg = photo_bytes["chelsea"]
    assert_error(await lite0.post("/classify", content=b"", headers=JPEG), 400, "empty_body")
    assert_error(
        await lite0.post("/classify", content=b"GIF89a garbage", headers=JPEG), 400, "bad_image"
    )
    assert_error(
        await lite0.post("/classify", content=b"hello world", headers=JPEG),
        415,
        "unsupported_media_type",
    )
    assert_error(
        await lite0.post("/classify", content=jpeg[: len(jpeg) // 2], headers=JPEG),
        400,
        "bad_image",
    )
    psd_like = encode(Image.new("RGB", (8, 8)), "PPM")  # Pillow reads it; the service does not
    assert_error(
        await lite0.post("/classify", content=psd_like, headers=JPEG), 415, "unsupported_media_type"
    )
    text = await lite0.post("/classify", content=jpeg, headers={"content-type": "text/plain"})
    assert_error(text, 415, "unsupported_media_type")
    missing = await lite0.post("/classify", files={"image": ("a.jpg", jpeg, "image/jpeg")})
    assert_error(missing, 400, "bad_request")
    for bad in ("0", "1001", "abc", "-3"):
        response = await lite0.post(f"/classify?top_k={bad}", content=jpeg, headers=JPEG)
        assert "top_k" in assert_error(response, 422, "invalid_request")["message"]
    assert_error(await lite0.get("/nowhere"), 404, "not_found")
    assert_error(await lite0.get("/classify"), 405, "method_not_allowed")
    # ... and the service still serves.
    assert (await lite0.post("/classify", content=jpeg, headers=JPEG)).status_code == 200


async def test_byte_limit_in_process(lite0_onnx: Path, photo_bytes: dict[str, bytes]) -> None:
    settings = settings_for(lite0_onnx, max_upload_bytes=10_000, max_image_pixels=100_000)
    async with in_process(settings) as client:
        big = photo_bytes["chelsea"]  # ~40 KB
        assert len(big) > 10_000
        assert_error(
            await client.post("/classify", content=big, headers=JPEG), 413, "payload_too_large"
        )

        async def chunks() -> Any:  # no Content-Length: counted while streaming
            for start in range(0, len(big), 4096):
                yield big[start : start + 4096]

        streamed = await client.post("/classify", content=chunks(), headers=JPEG)
        assert_error(streamed, 413, "payload_too_large")
        multipart = await client.post("/classify", files={"file": ("a.jpg", big, "image/jpeg")})
        assert_error(multipart, 413, "payload_too_large")
        small = encode(Image.new("RGB", (400, 300), "red"), "PNG")  # 120k pixels > 100k
        assert_error(
            await client.post("/classify", content=small, headers=JPEG), 413, "image_too_large"
        )
        ok = encode(Image.new("RGB", (300, 300), "red"), "PNG")
        assert (await client.post("/classify", content=ok, headers=JPEG)).status_code == 200


async def test_not_ready_before_startup(lite0_onnx: Path, photo_bytes: dict[str, bytes]) -> None:
    app = create_app(settings_for(lite0_onnx))  # lifespan not run: no model loaded
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/classify", content=photo_bytes["chelsea"], headers=JPEG)
        assert_error(response, 503, "not_ready")
        assert response.headers["retry-after"] == "1"
        assert_error(await client.get("/metadata"), 503, "not_ready")


async def test_api_key(lite0_onnx: Path, photo_bytes: dict[str, bytes]) -> None:
    async with in_process(settings_for(lite0_onnx, api_key="s3cret-key")) as client:
        jpeg = photo_bytes["coffee"]
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret-key"},
        ):
            response = await client.post("/classify", content=jpeg, headers={**JPEG, **headers})
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        for path in ("/metadata", "/metrics"):
            assert_error(await client.get(path), 401, "unauthorized")
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        good = {**JPEG, "Authorization": "Bearer s3cret-key"}
        assert (await client.post("/classify", content=jpeg, headers=good)).status_code == 200
        assert (await client.get("/metrics", headers=good)).status_code == 200
        batch = await client.post(
            "/classify/batch",
            files={"file": ("a.jpg", jpeg)},
            headers={"Authorization": "Bearer s3cret-key"},
        )
        assert batch.status_code == 200
        security = (await client.get("/openapi.json")).json()["paths"]["/classify"]["post"]
        assert security["security"] == [{"HTTPBearer": []}], "with a key, the token is required"


async def test_no_api_key_means_open(lite0: httpx.AsyncClient) -> None:
    assert (await lite0.get("/metadata")).status_code == 200
    assert (
        await lite0.get("/metadata", headers={"Authorization": "Bearer anything"})
    ).status_code == 200
    paths = (await lite0.get("/openapi.json")).json()["paths"]
    # Without a key the schema must not demand a token: no auth ({}) is an alternative.
    for operation in (paths["/classify"]["post"], paths["/v2/models/{model_name}/infer"]["post"]):
        assert operation["security"] == [{"HTTPBearer": []}, {}]


async def test_metrics_content(lite0_onnx: Path, photo_bytes: dict[str, bytes]) -> None:
    async with in_process(settings_for(lite0_onnx)) as client:
        for _ in range(3):
            assert (
                await client.post("/classify", content=photo_bytes["chelsea"], headers=JPEG)
            ).status_code == 200
        await client.post("/classify", content=b"", headers=JPEG)
        await client.post("/classify?top_k=0", content=b"x", headers=JPEG)
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        metric_value(text, "efficientnet_requests_total", {"route": "/classify", "status": "200"})
        == 3
    )
    assert (
        metric_value(text, "efficientnet_requests_total", {"route": "/classify", "status": "400"})
        == 1
    )
    assert (
        metric_value(text, "efficientnet_requests_total", {"route": "/classify", "status": "422"})
        == 1
    )
    assert metric_value(text, "efficientnet_errors_total", {"code": "empty_body"}) == 1
    assert metric_value(text, "efficientnet_errors_total", {"code": "invalid_request"}) == 1
    for histogram in ("queue_wait", "preprocess"):
        assert metric_value(text, f"efficientnet_{histogram}_seconds_count") == 3
    assert (
        metric_value(text, "efficientnet_request_duration_seconds_count", {"route": "/classify"})
        == 5
    )
    assert metric_value(text, "efficientnet_inference_seconds_count") >= 1
    assert metric_value(text, "efficientnet_batch_size_count") >= 1
    assert metric_value(text, "efficientnet_batch_size_sum") == 3
    assert "efficientnet_queue_depth 0.0" in text
    assert metric_value(text, "efficientnet_ready") == 1
    info = {"variant": "lite0", "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__}
    assert metric_value(text, "efficientnet_model_info", info) == 1


async def test_openapi_documents_models_and_errors(lite0: httpx.AsyncClient) -> None:
    schema = (await lite0.get("/openapi.json")).json()
    classify = schema["paths"]["/classify"]["post"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(
        classify["requestBody"]["content"]
    )
    assert {"200", "400", "401", "413", "415", "422", "503"} <= set(classify["responses"])
    assert classify["responses"]["415"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert "ClassifyResponse" in schema["components"]["schemas"]
    assert (await lite0.get("/docs")).status_code == 200


async def test_requests_refused_before_routing_keep_their_route_label(lite0_onnx: Path) -> None:
    """A 413 on Content-Length is answered by the body limiter before routing: its metric must
    still name /classify (the app's paths, flattened from the included routers), while an
    arbitrary client path stays "other" (bounded label cardinality)."""
    settings = settings_for(lite0_onnx, max_upload_bytes=1000)
    async with in_process(settings) as client:
        big = {**JPEG, "Content-Length": "5000"}
        assert (await client.post("/classify", content=b"x" * 5000, headers=big)).status_code == 413
        assert (
            await client.post("/no/such/path", content=b"x" * 5000, headers=big)
        ).status_code in (
            404,
            413,
        )
        text = (await client.get("/metrics")).text
    labels = {"route": "/classify", "status": "413"}
    assert metric_value(text, "efficientnet_requests_total", labels) == 1
    assert 'route="/no/such/path"' not in text
