"""Decompression bombs: small files claiming huge canvases are refused with 413 from their
header, before a full decode allocates, and the server's peak RSS shows it.

The peak is the kernel's VmHWM of the server process, reset just before the bombs
(``/proc/<pid>/clear_refs``), so it measures this phase alone.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import httpx
import pytest
from decode_attacks import big_rgba_png
from live_server import Server
from PIL import Image
from reliability_helpers import assert_error_shape
from reliability_images import gif_canvas, jpeg_claiming, png_bomb, webp_claiming

MiB = 1024 * 1024
# The smallest bomb below would take 64 MB decoded as 1-bit and 192 MB as RGB, the 30000² PNG
# 900 MB / 2.7 GB: a peak growth under this bound proves none of them was decoded.
PEAK_GROWTH_LIMIT_KB = 48 * 1024
ANSWER_WITHIN_S = 3.0

BOMBS: dict[str, Callable[[], bytes]] = {
    # A complete, valid PNG: all 30000 rows are really there, compressed ~8000:1.
    "png_30000x30000": lambda: png_bomb(30_000),
    # Over the service's 50 MP limit but under Pillow's own 2x guard: the service's check acts.
    "png_8000x8000": lambda: png_bomb(8_000),
    "gif_canvas_65535x65535": gif_canvas,
    "jpeg_sof_65000x65000": lambda: jpeg_claiming(65_000, 65_000),
    "webp_16384x16384": lambda: webp_claiming(16_384, 16_384),
}


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {name: build() for name, build in BOMBS.items()}


def test_bombs_rejected_before_decode(served: Server, bombs: dict[str, bytes]) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        client.get("/healthz")
        before = served.rss_kb()
        served.reset_peak()
        for name, data in bombs.items():
            for kind in ("raw", "multipart"):
                if kind == "raw":
                    response = client.post("/classify", content=data)
                else:
                    response = client.post("/classify", files={"file": (name, data, "image/png")})
                code = assert_error_shape(response, {413})
                assert code == "image_too_large", (name, kind, response.text)
                assert "pixels" in response.json()["error"]["message"]
                elapsed = response.elapsed.total_seconds()
                assert elapsed < ANSWER_WITHIN_S, (name, kind, elapsed)
        peak = served.hwm_kb()
    growth = peak - before
    sizes = {name: len(data) for name, data in bombs.items()}
    print(
        f"bomb sizes (bytes): {sizes}; server RSS before {before / 1024:.0f} MiB, "
        f"peak during bombs {peak / 1024:.0f} MiB (+{growth / 1024:.1f} MiB)"
    )
    assert growth < PEAK_GROWTH_LIMIT_KB, f"peak RSS grew {growth / 1024:.0f} MiB during bombs"
    served.assert_alive()


def test_bomb_in_batch_fails_alone(served: Server, bombs: dict[str, bytes], photos: dict) -> None:
    """In /classify/batch a bomb gets its own 413 entry and its neighbours are classified."""
    cat = photos["chelsea"].path.read_bytes()
    files = [
        ("file", ("cat.jpg", cat, "image/jpeg")),
        ("file", ("bomb.png", bombs["png_30000x30000"], "image/png")),
        ("file", ("bomb.jpg", bombs["jpeg_sof_65000x65000"], "image/jpeg")),
        ("file", ("cat2.jpg", cat, "image/jpeg")),
    ]
    response = httpx.post(f"{served.url}/classify/batch", files=files, timeout=30)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status_code"] for r in results] == [200, 413, 413, 200]
    assert results[1]["error"]["code"] == results[2]["error"]["code"] == "image_too_large"
    for item in (results[0], results[3]):
        assert item["result"]["predictions"][0]["index"] in photos["chelsea"].expected


def test_peak_probe_sees_a_real_decode(served: Server) -> None:
    """The probe's control: an honest 36 MP image (under the limit) is decoded, and the same
    measurement shows the gigabyte-class growth the bombs above did not cause."""
    # RGBA, 6000x6000: 144 MB decoded (a 1-bit one would now take 36 MB: the conversion to
    # RGB runs in strips), in a decode worker, which the probe counts with the server.
    data = big_rgba_png(6_000, 6_000)
    served.reset_peak()
    before = served.rss_kb()
    response = httpx.post(f"{served.url}/classify", content=data, timeout=60)
    growth = served.hwm_kb() - before
    assert response.status_code == 200, response.text
    print(f"control decode of 6000x6000: peak RSS +{growth / 1024:.0f} MiB")
    assert growth > PEAK_GROWTH_LIMIT_KB, growth


def test_bombs_via_open_inference_protocol(served: Server, bombs: dict[str, bytes]) -> None:
    """The same bombs as /v2 BYTES inputs (base64 in JSON) are refused with 413 too."""
    url = f"{served.url}/v2/models/efficientnet_lite0/infer"
    served.reset_peak()
    before = served.rss_kb()
    for name, data in bombs.items():
        tensor = {"name": "encoded_image", "datatype": "BYTES", "shape": [1]}
        tensor["data"] = [base64.b64encode(data).decode()]
        response = httpx.post(url, json={"inputs": [tensor]}, timeout=30)
        assert response.status_code == 413, (name, response.text)
        assert set(response.json()) == {"error"}, response.text
    growth = served.hwm_kb() - before
    assert growth < PEAK_GROWTH_LIMIT_KB, f"peak RSS grew {growth / 1024:.0f} MiB"


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(1, 4000), (4000, 1)])
def test_extreme_aspect_ratio_is_not_a_memory_bomb(served: Server, size: tuple[int, int]) -> None:
    """A 1x4000 PNG (4000 pixels, ~100 bytes) is far under every limit, yet resizing its
    shorter side to 256 before cropping would build a 256x1,024,000 image (~1 GB): the service
    resizes only the region the center crop keeps."""
    data = _png(size)
    served.reset_peak()
    before = served.rss_kb()
    response = httpx.post(f"{served.url}/classify", content=data, timeout=60)
    growth_mib = (served.hwm_kb() - before) / 1024
    seconds = response.elapsed.total_seconds()
    print(
        f"{size[0]}x{size[1]} PNG ({len(data)} B): {response.status_code} in {seconds:.1f} s, "
        f"peak RSS +{growth_mib:.0f} MiB"
    )
    assert response.status_code == 200, response.text
    assert growth_mib < 64, f"peak RSS grew {growth_mib:.0f} MiB for a 4000-pixel image"
    assert seconds < 1.0
