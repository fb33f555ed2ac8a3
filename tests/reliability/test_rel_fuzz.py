"""Property-based fuzzing of the upload path against the real server process.

Every upload must get either a well-formed 200 or the JSON error shape with 400/413/415 —
never a 5xx, never a hang past the request timeout — and /healthz must answer after each one.

Reproducible: ``derandomize=True`` (examples follow from the test's source, not a clock) and
no example database. RELIABILITY_FUZZ_EXAMPLES scales the number of examples per property.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import Server
from PIL import Image
from reliability_helpers import (
    ERROR_CODES,
    REQUEST_TIMEOUT_S,
    UPLOAD_ERRORS,
    assert_classification,
    assert_error_shape,
)
from reliability_images import (
    bmp_header,
    gif_frame_header,
    jpeg_claiming,
    png_header,
    small_image,
    webp_claiming,
)

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # one example is an HTTP round trip on a shared machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
FORMATS = {
    "JPEG": {"quality": 90},
    "PNG": {},
    "GIF": {},
    "WEBP": {"quality": 80},
    "BMP": {},
    "TIFF": {},
}
SIGNATURES = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP", b"BM"]


@pytest.fixture(scope="module")
def client(served: Server) -> Iterator[httpx.Client]:
    print(f"hypothesis settings: {FUZZ!r}")
    # A hang past the service's own timeout fails here, with a margin for a loaded machine.
    with httpx.Client(base_url=served.url, timeout=REQUEST_TIMEOUT_S + 10) as c:
        yield c


@pytest.fixture(scope="module")
def originals(photos: dict) -> dict[str, bytes]:
    """Chelsea the cat, downscaled, in every promised format (the fuzzer's seeds)."""
    cat = Image.open(photos["chelsea"].path).convert("RGB").resize((96, 64))
    out = {}
    for fmt, params in FORMATS.items():
        buffer = io.BytesIO()
        cat.save(buffer, fmt, **params)
        out[fmt] = buffer.getvalue()
    return out


def check_upload(client: httpx.Client, server: Server, data: bytes, multipart: bool) -> int:
    """Upload once; assert the answer honours the contract and the server is still healthy."""
    if multipart:
        response = client.post("/classify", files={"file": ("upload", data, "image/jpeg")})
    else:
        headers = {"content-type": "application/octet-stream"}
        response = client.post("/classify", content=data, headers=headers)
    if response.status_code == 200:
        assert_classification(response.json(), top_k=5)
        # Consistency: whatever the service accepted really is an image Pillow can decode.
        Image.open(io.BytesIO(data)).load()
    else:
        assert assert_error_shape(response) in ERROR_CODES, response.text
    assert client.get("/healthz").status_code == 200, "server stopped answering /healthz"
    assert server.process.poll() is None, "server died"
    return response.status_code


@FUZZ
@given(data=st.binary(max_size=4096), multipart=st.booleans())
def test_random_bytes(client: httpx.Client, served: Server, data: bytes, multipart: bool) -> None:
    status = check_upload(client, served, data, multipart)
    assert status != 200 or len(data) > 0


@st.composite
def mutated(draw: st.DrawFn, originals: dict[str, bytes]) -> bytes:
    """A real image with bit flips, a truncation, a foreign header and/or a spliced chunk."""
    data = bytearray(originals[draw(st.sampled_from(sorted(originals)))])
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        signature = draw(st.sampled_from(SIGNATURES))
        data[: len(signature)] = signature
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def test_mutated_real_images(
    client: httpx.Client, served: Server, originals: dict[str, bytes]
) -> None:
    seen: set[int] = set()

    @FUZZ
    @given(data=mutated(originals), multipart=st.booleans())
    def prop(data: bytes, multipart: bool) -> None:
        seen.add(check_upload(client, served, data, multipart))

    prop()
    # The mutations must exercise both sides of the contract, or the fuzzer proves little.
    assert 200 in seen and seen & {400, 415}, seen


def test_unmutated_originals_classify(client: httpx.Client, originals: dict[str, bytes]) -> None:
    """The fuzzer's seeds themselves are accepted (so rejections above are the mutations')."""
    for fmt, data in originals.items():
        response = client.post("/classify", content=data, headers={"content-type": "image/x"})
        assert response.status_code == 200, (fmt, response.text)


SIDE = st.integers(0, 2**16 - 1)
HEADERS = st.one_of(
    st.builds(png_header, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.builds(jpeg_claiming, st.integers(1, 2**16 - 1), st.integers(1, 2**16 - 1)),
    st.builds(gif_frame_header, st.tuples(SIDE, SIDE), st.tuples(SIDE, SIDE)),
    st.builds(bmp_header, st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1)),
    st.builds(webp_claiming, st.integers(1, 16384), st.integers(1, 16384)),
)


@FUZZ
@given(data=HEADERS, multipart=st.booleans())
def test_absurd_dimensions(client: httpx.Client, served: Server, data: bytes, multipart: bool):
    check_upload(client, served, data, multipart)


def test_small_image_formats_accepted(client: httpx.Client) -> None:
    """A control for the header fuzzing: honest small images in the same formats are 200."""
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        response = client.post("/classify", content=small_image(fmt))
        assert response.status_code == 200, (fmt, response.text)


def test_batch_of_mutated_images(
    client: httpx.Client, served: Server, originals: dict[str, bytes]
) -> None:
    """/classify/batch with 1-4 mutated files: a 200 whose items each honour the contract on
    their own (a well-formed result, or an error entry with 400/413/415), in upload order."""

    @FUZZ
    @given(files=st.lists(mutated(originals), min_size=1, max_size=4))
    def prop(files: list[bytes]) -> None:
        parts = [("file", (f"f{i}", data, "image/jpeg")) for i, data in enumerate(files)]
        response = client.post("/classify/batch", files=parts)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["filename"] for r in results] == [f"f{i}" for i in range(len(files))]
        for item in results:
            if item["status_code"] == 200:
                assert item["error"] is None
                assert_classification(item["result"], top_k=5)
            else:
                assert item["status_code"] in UPLOAD_ERRORS and item["result"] is None, item
                assert item["error"]["code"] in ERROR_CODES and item["error"]["message"]
        assert client.get("/healthz").status_code == 200
        assert served.process.poll() is None, "server died"

    prop()


OIP_INPUTS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image", "normalized_image", "encoded_image", "x"]),
        "datatype": st.sampled_from(["UINT8", "FP32", "BYTES", "INT64"]),
        "shape": st.lists(st.integers(-1, 2**40), min_size=0, max_size=5),
        "data": st.one_of(
            st.lists(st.integers(-(2**8), 2**9), max_size=64),
            st.lists(st.floats(allow_nan=True), max_size=16),
            st.lists(st.text(max_size=16), max_size=4),
        ),
    }
)


@FUZZ
@given(inputs=st.lists(OIP_INPUTS, max_size=2))
def test_open_inference_protocol_tensors(
    client: httpx.Client, served: Server, inputs: list[dict]
) -> None:
    """/v2 infer with fuzzed tensors (absurd shapes above all: up to 2^40 per axis) answers a
    4xx in the protocol's error shape without allocating what the shape claims."""
    # json.dumps writes NaN/Infinity (not JSON): the server must refuse those bodies too.
    body = json.dumps({"inputs": inputs})
    headers = {"content-type": "application/json"}
    response = client.post("/v2/models/efficientnet_lite0/infer", content=body, headers=headers)
    assert response.status_code in {400, 413, 415, 422}, response.text
    assert set(response.json()) == {"error"}, response.text
    assert client.get("/healthz").status_code == 200
    assert served.process.poll() is None, "server died"
