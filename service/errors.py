"""One error type for everything the service refuses, and the one JSON shape it is answered in.

The HTTP framework's responses are built from ``error_body`` in service/api/errors.py; the edge
writes it raw, before any app runs (service/edge/protocol.py).
"""

from __future__ import annotations

import orjson

# For refusals after which the client must not reuse the connection (its body is unread).
CLOSE = {"Connection": "close"}


def error_body(code: str, message: str, request_id: str) -> bytes:
    """The service's error shape, ``{"error": {"code", "message", "request_id"}}``, as JSON
    bytes; ``request_id`` is the answer's ``X-Request-ID`` (service/request_id.py)."""
    return orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})


class StartupError(Exception):
    """The service cannot start: bad configuration, missing or unusable model.

    Its message is a single human-readable line; ``python -m service`` prints it and exits non-zero.
    """


class ServiceError(Exception):
    """A request the service refuses; rendered as ``{"error": {"code", "message", ...}}``."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.headers = headers


class BadImage(ServiceError):
    """Empty, truncated or corrupt upload (400)."""

    status_code = 400
    code = "bad_image"


class EmptyBody(BadImage):
    code = "empty_body"


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class UnsupportedMediaType(ServiceError):
    """Not an image, or an image format the service does not decode (415)."""

    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    """Body over the byte limit (413)."""

    status_code = 413
    code = "payload_too_large"


class ImageTooLarge(ServiceError):
    """Pixel count over the limit: a decompression bomb or simply too big (413)."""

    status_code = 413
    code = "image_too_large"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "missing or invalid API key") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotReady(ServiceError):
    """Model not loaded or warmed yet, or shutting down (503)."""

    status_code = 503
    code = "not_ready"

    def __init__(self, message: str = "model is not ready", retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class QueueFull(ServiceError):
    """Admission (service/pipeline/admission.py) or the batch queue is full: retry later (503)."""

    status_code = 503
    code = "queue_full"

    def __init__(
        self,
        message: str = "server busy, retry later",
        retry_after_s: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s), **(headers or {})})


class RequestTimeout(ServiceError):
    """The request did not finish within EFFICIENTNET_REQUEST_TIMEOUT_S."""

    status_code = 504
    code = "timeout"


class BodyTimeout(ServiceError):
    """The client did not finish sending its body in time (slow upload)."""

    status_code = 408
    code = "body_timeout"


class InferenceFailed(ServiceError):
    status_code = 500
    code = "inference_failed"


class DecodeTooExpensive(ServiceError):
    """Decoding would cost (or did cost) more than its budget: too slow, too many scans (422)."""

    status_code = 422
    code = "decode_too_expensive"


class DecodeFailed(ServiceError):
    """The decoder itself failed on this image (its worker process crashed) (422)."""

    status_code = 422
    code = "decode_failed"


class BodyTooSlow(BodyTimeout):
    """The body arrives slower than EFFICIENTNET_MIN_BODY_RATE after the grace period (408)."""

    code = "body_too_slow"


class TooManyImages(ServiceError):
    """More images in one request than the pipeline can ever hold at once (413, not "retry")."""

    status_code = 413
    code = "too_many_images"


class ClientClosedRequest(ServiceError):
    """The client went away before its answer: nginx's 499, never a 5xx (no one reads it)."""

    status_code = 499
    code = "client_closed_request"


class ModelRefused(ServiceError):
    """A model to swap in is missing, unreadable or breaks the contract; the one in service
    keeps serving (400)."""

    status_code = 400
    code = "model_refused"


class SwapInProgress(ServiceError):
    """Another model is being loaded and checked; one swap at a time (409)."""

    status_code = 409
    code = "swap_in_progress"
