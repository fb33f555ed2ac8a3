"""The single-upload multipart reader (service/api/upload.py): the file's bytes come out exactly,
however the body is cut into chunks, and every malformed or oversized form is a 400 with the
server still serving."""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from service_helpers import assert_error, scores

pytestmark = pytest.mark.asyncio(loop_scope="session")
BOUNDARY = "b0undary-7d3f"
FORM = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def part(name: str, data: bytes, filename: str | None = "photo") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
    return head + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def chunked(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    """``body`` streamed in pieces cut at ``cuts`` (each a separate ASGI body message)."""
    edges = [0, *sorted({c % (len(body) + 1) for c in cuts}), len(body)]
    for start, end in itertools.pairwise(edges):
        if end > start:
            yield body[start:end]


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """Over 1 MiB (past the size Starlette would spool to disk), and holding the boundary's
    first bytes and CRLFs by chance is likely: noise."""
    noise = np.random.default_rng(7).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    assert buffer.tell() > 2**20
    return buffer.getvalue()


async def test_a_large_file_comes_out_byte_for_byte(lite0: httpx.AsyncClient, big_png) -> None:
    raw = await lite0.post("/classify", content=big_png, headers={"content-type": "image/png"})
    body = form(part("note", b"a field is counted, not kept", None), part("file", big_png))
    multipart = await lite0.post("/classify", content=body, headers=FORM)
    assert scores(multipart) == scores(raw)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10**7), max_size=12))
async def test_any_chunking_gives_the_same_answer(
    lite0: httpx.AsyncClient, photos: dict[str, Any], cuts: list[int]
) -> None:
    data = photos["chelsea"].path.read_bytes()
    raw = await lite0.post("/classify", content=data, headers={"content-type": "image/jpeg"})
    body = form(part("file", data))
    streamed = await lite0.post("/classify", content=chunked(body, cuts), headers=FORM)
    assert scores(streamed) == scores(raw)


@pytest.mark.parametrize(
    "body,headers,words",
    [
        (form(part("file", b"a"), part("file", b"b")), FORM, "more than one file"),
        (form(part("image", b"\xff\xd8")), FORM, "field 'file'"),
        (form(part("file", b"x", None)), FORM, "field 'file'"),
        (form(*(part(f"f{i}", b"v", None) for i in range(9)), part("file", b"x")), FORM, "fields"),
        (b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nx", FORM, "invalid multipart"),
        (form(part("file", b"x")), {"content-type": "multipart/form-data"}, "boundary"),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n'
            f"--{BOUNDARY}--\r\n".encode(),
            FORM,
            "without a name",
        ),
    ],
    ids=[
        "two-files",
        "wrong-field",
        "not-a-file",
        "nine-fields",
        "garbage",
        "no-boundary",
        "no-name",
    ],
)
async def test_malformed_forms_are_400(
    lite0: httpx.AsyncClient, photo_bytes: dict[str, bytes], body: bytes, headers: Any, words: str
) -> None:
    error = assert_error(await lite0.post("/classify", content=body, headers=headers), 400,
                         "bad_request")  # fmt: skip
    assert words in error["message"], error
    ok = await lite0.post("/classify", files={"file": ("c.jpg", photo_bytes["chelsea"])})
    assert ok.status_code == 200, ok.text
