"""Hostile inputs, round three, against the real ``python -m service``: float images are read
as image tools read them (or refused by name, never answered as black), and HTTP/1.1 without
exactly one Host field is a 400; honest photos keep being served."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from edge_helpers import assert_honest_served, connect, read_until_closed, small_photo
from live_server import Server
from PIL import Image
from reliability_helpers import assert_error_shape


def tiff(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "TIFF")
    return out.getvalue()


def classify(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/classify", content=data, headers={"content-type": "image/tiff"})


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_a_float_photo_gets_the_8_bit_copys_answer(
    served: Server, photos: dict[str, Any], name: str
) -> None:
    grey = Image.open(photos[name].path).convert("L")
    floats = Image.fromarray(np.asarray(grey, np.float32) / 255.0, "F")
    with httpx.Client(base_url=served.url, timeout=30) as client:
        eight = classify(client, tiff(grey))
        flt = classify(client, tiff(floats))
        black = classify(client, tiff(Image.new("L", grey.size)))
    assert eight.status_code == flt.status_code == 200, (eight.text, flt.text)
    top = [r.json()["predictions"][0] for r in (eight, flt, black)]
    assert top[1]["index"] == top[0]["index"], top
    assert abs(top[1]["score"] - top[0]["score"]) < 0.02, top
    assert top[0]["index"] != top[2]["index"], "the photo must not read like a black image"


@pytest.mark.parametrize(
    "samples,words",
    [(255.0, "from 0 to 255"), (-0.5, "from -0.5"), (np.nan, "NaN")],
    ids=["0-255", "negative", "nan"],
)
def test_float_samples_without_a_reading_are_415(
    served: Server, samples: float, words: str
) -> None:
    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    if np.isnan(samples):
        values[10, 10] = np.nan  # one pixel: Pillow's own extrema would skip it
    elif samples > 1:
        values = values * samples
    else:
        values[0, 0] = samples
    with httpx.Client(base_url=served.url, timeout=30) as client:
        response = classify(client, tiff(Image.fromarray(values, "F")))
    assert assert_error_shape(response) == "unsupported_media_type", response.text
    assert response.status_code == 415 and "float" in response.text and words in response.text
    assert_honest_served(served, small_photo(), count=1)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST /classify HTTP/1.1\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
    ids=["1.1-no-host", "two-hosts", "post-no-host", "1.0-two-hosts"],
)
def test_host_must_be_one_field(served: Server, head: bytes) -> None:
    with connect(served, timeout_s=10) as sock:
        sock.sendall(head)
        (answer,) = read_until_closed(sock, timeout_s=10)
    assert answer.status == 400, answer
    assert json.loads(answer.body)["error"]["code"] == "bad_request"
    assert b"Host" in answer.body and answer.headers.get("connection") == "close"
    assert_honest_served(served, small_photo(), count=1)


def test_http_1_0_may_leave_host_out(served: Server) -> None:
    with connect(served, timeout_s=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        (answer,) = read_until_closed(sock, timeout_s=10)
    assert answer.status == 200, answer
