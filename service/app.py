"""The FastAPI app: the factory that wires the pieces, and the lifespan (load → warm → serve →
drain).

``uvicorn service.app:app`` works: the module-level ``app`` is built on first access (never at
import), loading settings and model then, so a bad one is one clear line and exit code 2.
``python -m service`` is the recommended start: it adds the hardened edge (service/edge/).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__
from service.api.errors import install_handlers
from service.api.openapi import describe, route_paths
from service.api.routes import classify, health, metadata, page
from service.config import Settings, load_settings
from service.edge.body_limit import BodyLimitMiddleware, BodyRate
from service.edge.request_metrics import RequestMetricsMiddleware
from service.edge.signals import before_exit_signal, on_reload_signal
from service.errors import StartupError
from service.metrics import Metrics
from service.oip import repository
from service.oip import routes as oip
from service.pipeline.decode.image import configure_pillow
from service.pipeline.pipeline import Pipeline
from service.pipeline.session import ModelSession
from service.request_id import RequestIdMiddleware
from service.tracing import configure_tracing

log = logging.getLogger("service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # The header checks run here, the decodes in the workers: both with the same Pillow limits.
    configure_pillow(settings.max_image_pixels)
    session = app.state.preloaded_session or await asyncio.to_thread(ModelSession.load, settings)
    app.state.preloaded_session = None
    pipeline = Pipeline.build(settings, session, app.state.metrics)
    await pipeline.start()
    restore_signals = before_exit_signal(
        pipeline.begin_drain, pipeline.begin_shutdown, settings.drain_delay_s
    )
    restore_reload = on_reload_signal(pipeline.reload_in_background)
    app.state.pipeline = pipeline
    log.info(
        "ready: %s (variant %s) on %s",
        session.metadata.model_name, session.metadata.variant, session.provider,
    )  # fmt: skip
    try:
        yield
    finally:
        # Uvicorn has already let in-flight requests finish; drain whatever is still queued.
        restore_reload()
        restore_signals()
        await pipeline.stop()
        log.info("stopped")


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
    install_handlers(app)
    routers = (health, classify, metadata, oip, repository, page)
    for module in routers:
        app.include_router(module.router)
    # Added last = outermost: metrics see the body limiter's 413s too.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        body_timeout_s=settings.request_timeout_s,
        metrics=app.state.metrics,
        rate=BodyRate(settings.min_body_rate, settings.body_rate_grace_s),
    )
    describe(app, settings.api_key is not None)
    known = [path for path in route_paths(app) if "{" not in path]
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics, known_paths=known)
    # Outermost of ours: every answer above, the body limiter's 413s included, has its id.
    app.add_middleware(RequestIdMiddleware)
    # Off unless OTEL_* asks; on, the request's span wraps all of the above.
    configure_tracing(app, os.environ)
    return app


def _app_for_uvicorn() -> FastAPI:
    """Settings and model loaded now, so a bad one is one line and exit 2, as with
    ``python -m service``, not a traceback from inside uvicorn's lifespan."""
    try:
        settings = load_settings()
        session = ModelSession.load(settings)
        return create_app(settings, session=session)
    except StartupError as exc:
        print(f"efficientnet-serve: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def __getattr__(name: str) -> Any:
    # `uvicorn service.app:app`: build the app on first access, never at import.
    if name == "app":
        globals()["app"] = built = _app_for_uvicorn()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
