"""Reading uploads out of a request: one image (multipart field ``file`` or the raw body), or
the ``file`` parts of a batch.

The body itself is bounded in bytes, time and rate before any of this sees it
(service/edge/body_limit.py, EFFICIENTNET_MAX_UPLOAD_MB).
"""

from __future__ import annotations

from collections.abc import Callable

from python_multipart import multipart
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.errors import BadRequest, UnsupportedMediaType

RAW_TYPE = "application/octet-stream"  # or any image/*
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 8


def media_type(request: Request) -> str:
    """The Content-Type's media type, lower-cased: RFC 9110 makes type and subtype
    case-insensitive (``IMAGE/JPEG``, ``Multipart/Form-Data``)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_single_upload(request: Request) -> bytes:
    """The image of a one-image request: multipart field ``file``, or the raw body."""
    kind = media_type(request)
    if kind == MULTIPART:
        return await _multipart_file(request)
    if kind and not (kind.startswith("image/") or kind == RAW_TYPE):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {request.headers.get('content-type', '')!r}: send "
            "multipart/form-data with a 'file' field, or the image itself as image/* or "
            "application/octet-stream"
        )
    return await request.body()


class _OneFile:
    """python-multipart callbacks that keep the data of the one file part, as it arrives.

    Not Starlette's form parser: it spools a file over 1 MiB to a temporary file, a thread hop
    per chunk, and copies smaller ones through a BytesIO, about 3 ms of the server's CPU per
    2 MB phone photo (BENCHMARKS.md, "Upload path"). A single upload is held in memory whole
    anyway (the decoder takes bytes, as a raw upload arrives), and the body limit bounds it.
    Field values are counted, not kept: the route reads none.
    """

    def __init__(self, max_fields: int) -> None:
        self.max_fields = max_fields
        self.fields = 0
        self.file_field: str | None = None  # the file part's field name
        self.chunks: list[memoryview] = []  # its data
        self._header: tuple[bytearray, bytearray] = (bytearray(), bytearray())
        self._disposition = b""
        self._data: list[memoryview] | None = None  # the current part's, if it is a file

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header[0].extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header[1].extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }

    def _part_begin(self) -> None:
        self._disposition, self._data = b"", None

    def _header_end(self) -> None:
        name, value = self._header
        if bytes(name).lower() == b"content-disposition":
            self._disposition = bytes(value)
        name.clear()
        value.clear()

    def _headers_finished(self) -> None:
        _, options = multipart.parse_options_header(self._disposition)
        if b"name" not in options:
            raise BadRequest("multipart part without a name in its Content-Disposition header")
        if b"filename" not in options:
            self.fields += 1
            if self.fields > self.max_fields:
                raise BadRequest(f"too many multipart fields: at most {self.max_fields}")
            return
        if self.file_field is not None:
            raise BadRequest("multipart upload holds more than one file: send one, in 'file'")
        self.file_field = options[b"name"].decode("latin-1")
        self._data = self.chunks

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._data is not None:
            # ``data`` is the request's chunk or the parser's boundary: bytes, never reused, so a
            # view is safe, and the join below is the one copy.
            self._data.append(memoryview(data)[start:end])


async def _multipart_file(request: Request) -> bytes:
    _, params = multipart.parse_options_header(request.headers.get("content-type", ""))
    if b"boundary" not in params:
        raise BadRequest("multipart/form-data without a boundary in its Content-Type")
    parts = _OneFile(MAX_FORM_FIELDS)
    try:
        parser = multipart.MultipartParser(params[b"boundary"], parts.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except multipart.FormParserError as exc:
        raise BadRequest(f"invalid multipart body: {exc}") from None
    if parts.file_field != "file":
        raise BadRequest("multipart upload needs a file in the field 'file'")
    return b"".join(parts.chunks)


async def read_form(request: Request, max_files: int) -> FormData:
    """A batch's whole multipart body; files over 1 MiB are spooled to disk (the caller closes
    the form)."""
    parser = MultiPartParser(
        request.headers, request.stream(), max_files=max_files, max_fields=MAX_FORM_FIELDS
    )
    return await _parsed(parser)


async def _parsed(parser: MultiPartParser) -> FormData:
    try:
        return await parser.parse()
    except MultiPartException as exc:  # a malformed body, or over max_files / max_fields
        raise BadRequest(exc.message) from None


def uploads(form: FormData) -> list[UploadFile]:
    return [u for u in form.getlist("file") if isinstance(u, UploadFile)]
