"""The answers the edge writes itself, before any app runs: the service's error shape as raw
HTTP/1.1 bytes, with the request id."""

from __future__ import annotations

from http import HTTPStatus

from service.errors import error_body


def json_answer(status: int, code: str, message: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 answer in the service's error shape; the connection closes after it."""
    body = error_body(code, message, request_id)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-request-id: {request_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
