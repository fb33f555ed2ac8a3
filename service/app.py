"""The FastAPI app: factory, lifespan (load → warm up → serve → drain), error rendering.

``uvicorn service.app:app`` works: the module-level ``app`` is built on first access (never at
import), loading settings and model then, so a bad one is one clear line and exit code 2.
``python -m service`` is the recommended start: it also adds a header timeout, a lingering close
and a connection limit (service/server.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from . import __version__, oip, page, routes
from .admission import Admission
from .batcher import Batcher
from .config import MiB, Settings, load_settings
from .decoding import DecodeLimits, Decoder
from .errors import ClientClosedRequest, ServiceError, StartupError
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, BodyRate, RequestMetricsMiddleware
from .preprocess import configure_pillow
from .responses import error_response, service_error_response
from .runtime import Runtime
from .session import ModelSession

log = logging.getLogger("service")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _build_runtime(app: FastAPI, settings: Settings, session: ModelSession) -> Runtime:
    metrics: Metrics = app.state.metrics
    policy = settings.batch_policy(session.provider)
    preprocess_threads, intra_op = settings.thread_counts()
    # Admission (service/admission.py) is the one gate: it lets in what the pipeline holds with
    # every stage full. The batcher's queue is sized to that, so an image admitted at the door
    # is never refused after its decode.
    running = policy.workers * policy.max_batch_size
    admission = Admission(settings.max_queue + running + preprocess_threads)
    batcher = Batcher(
        session.run,
        max_batch_size=policy.max_batch_size,
        max_delay_ms=policy.max_delay_ms,
        max_queue=admission.capacity,
        workers=policy.workers,
        metrics=metrics,
    )
    executor = ThreadPoolExecutor(preprocess_threads, thread_name_prefix="preprocess")
    limits = DecodeLimits(
        workers=preprocess_threads,
        timeout_s=settings.decode_timeout_s,
        memory_bytes=settings.decode_memory_bytes,
        max_pixels=settings.max_image_pixels,
    )
    decoder = Decoder(session.metadata.preprocessing, limits, executor)
    metrics.set_model(
        variant=session.metadata.variant,
        provider=session.provider,
        sha256=session.sha256,
        ort_version=ort.__version__,
    )
    log.info(
        "loaded %s as %s (variant %s, %d classes, sha256 %s…) on %s; batch ≤ %d, delay %g ms, "
        "%d in flight, queue %d; %d decode workers (%g s, %d MiB), %d onnxruntime threads",
        session.path, session.metadata.model_name, session.metadata.variant, session.classes,
        session.sha256[:12], session.provider,
        policy.max_batch_size, policy.max_delay_ms, policy.workers, settings.max_queue,
        preprocess_threads, limits.timeout_s, limits.memory_bytes // MiB, intra_op,
    )  # fmt: skip
    return Runtime(settings, session, batcher, metrics, executor, policy, admission, decoder)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # The header checks run here, the decodes in the workers: both with the same Pillow limits.
    configure_pillow(settings.max_image_pixels)
    session = app.state.preloaded_session or await asyncio.to_thread(ModelSession.load, settings)
    app.state.preloaded_session = None
    runtime = _build_runtime(app, settings, session)
    await asyncio.to_thread(session.warm_up, {1, runtime.batch_policy.max_batch_size})
    runtime.batcher.start()
    restore_signals = _cut_decodes_on_exit_signal(runtime.decoder)
    app.state.runtime = runtime
    runtime.ready = True
    runtime.metrics.ready.set(1)
    log.info(
        "ready: %s (variant %s) on %s",
        session.metadata.model_name, session.metadata.variant, session.provider,
    )  # fmt: skip
    try:
        yield
    finally:
        # Uvicorn has already let in-flight requests finish; drain whatever is still queued.
        runtime.ready = False
        runtime.metrics.ready.set(0)
        restore_signals()
        # Workers first: a decode still running (its request gave up) must not hold up the exit.
        runtime.decoder.close()
        await runtime.batcher.stop()
        runtime.executor.shutdown(wait=True)
        log.info("stopped")


def _cut_decodes_on_exit_signal(decoder: Decoder) -> Callable[[], None]:
    """On SIGTERM/SIGINT, before uvicorn's handler starts its drain, shorten the decodes.

    uvicorn installs its handlers before the lifespan starts; this wraps them until the
    lifespan ends (the returned function puts them back). Off the main thread (the tests'
    in-thread servers) signals cannot be handled: the lifespan's end closes the decoder anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wrapped: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            decoder.begin_shutdown()
            previous(signum, frame)

        signal.signal(sig, handler)
        wrapped[sig] = previous

    def restore() -> None:
        for sig, previous in wrapped.items():
            signal.signal(sig, previous)

    return restore


def _count(request: Request, code: str) -> None:
    request.app.state.metrics.errors.labels(code).inc()


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    _count(request, exc.code)
    return service_error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    if oip.speaks_oip(request.url.path):  # no /v2 route matched (404/405): the protocol's shape
        return oip.oip_error(request, exc.status_code, code, str(exc.detail), exc.headers)
    _count(request, code)
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-request: its doing, not ours. One line, counted as 499."""
    assert isinstance(exc, ClientDisconnect)
    error = ClientClosedRequest("client closed the connection before the answer")
    log.info("%s %s: %s (499)", request.method, request.url.path, error.message)
    _count(request, error.code)
    return service_error_response(error)  # nobody reads it; its status goes to the metrics


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    _count(request, "invalid_request")
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    _count(request, "internal_error")
    return error_response(500, "internal_error", "internal server error")


def create_app(settings: Settings | None = None, *, session: ModelSession | None = None) -> FastAPI:
    """Build the app; the model loads in its lifespan (or pass an already loaded ``session``)."""
    settings = settings or load_settings()
    app = FastAPI(
        title="EfficientNet classification service",
        version=__version__,
        summary="Image classification with EfficientNet (B0-B8, L2, Lite0-Lite4) on onnxruntime",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.preloaded_session = session
    handlers: dict[Any, Any] = {
        ServiceError: _service_error,
        ClientDisconnect: _client_disconnect,
        StarletteHTTPException: _http_error,
        RequestValidationError: _validation_error,
        Exception: _unexpected_error,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
    app.include_router(routes.router)
    app.include_router(oip.router)
    app.include_router(page.router)
    # Added last = outermost: metrics see the body limiter's 413s too.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        body_timeout_s=settings.request_timeout_s,
        metrics=app.state.metrics,
        rate=BodyRate(settings.min_body_rate, settings.body_rate_grace_s),
    )
    if settings.api_key is None:
        app.openapi = lambda: _optional_auth(FastAPI.openapi(app))  # type: ignore[method-assign]
    known = [path for path in _route_paths(app) if "{" not in path]
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics, known_paths=known)
    return app


def _route_paths(app: FastAPI) -> list[str]:
    """Every route's path. FastAPI >= 0.123 keeps an included router as one lazy entry of
    ``app.routes``; ``iter_route_contexts`` flattens them (older releases list them flat)."""
    from fastapi import routing

    iterate = getattr(routing, "iter_route_contexts", None)
    routes = iterate(app.routes) if iterate else app.routes
    return [path for route in routes if (path := getattr(route, "path", None))]


def _optional_auth(schema: dict[str, Any]) -> dict[str, Any]:
    """No API key configured: the bearer token is optional (``{}``: no auth is an alternative)."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            security = operation.get("security")
            if security and {} not in security:
                security.append({})
    return schema


def _app_for_uvicorn() -> FastAPI:
    """Settings and model loaded now, so a bad one is one line and exit 2, as with
    ``python -m service``, not a traceback from inside uvicorn's lifespan."""
    try:
        settings = load_settings()
        session = ModelSession.load(settings)
    except StartupError as exc:
        print(f"efficientnet-serve: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return create_app(settings, session=session)


def __getattr__(name: str) -> Any:
    # `uvicorn service.app:app`: build the app on first access, never at import.
    if name == "app":
        globals()["app"] = built = _app_for_uvicorn()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
