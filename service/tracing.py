"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables switch it on.

On when ``OTEL_TRACES_EXPORTER=otlp`` or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); off with ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``. The specification's default exporter is OTLP, but a service
exporting to a collector nobody runs would log a failed export every few seconds: here tracing
is asked for, never assumed.

On: an SDK ``TracerProvider`` (``service.name`` from ``OTEL_SERVICE_NAME`` or
``OTEL_RESOURCE_ATTRIBUTES``, else ``efficientnet-service``; the sampler from
``OTEL_TRACES_SAMPLER``, by default the caller's decision or always), a ``BatchSpanProcessor``
(``OTEL_BSP_*``) and the OTLP/HTTP protobuf exporter (``OTEL_EXPORTER_OTLP_*``: headers,
timeout, compression, certificates), set as the global provider; and the FastAPI app
instrumented, a SERVER span per request joining the caller's W3C ``traceparent``. The stage
spans under it are the pipeline's (service/pipeline/spans.py).

Off: nothing is set up. OpenTelemetry's API keeps its no-op provider, the app has no tracing
middleware, and the stage spans cost a context lookup each.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from service import __version__
from service.errors import StartupError

log = logging.getLogger("service")

DEFAULT_SERVICE_NAME = "efficientnet-service"
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"  # OTLP/HTTP's default
TRACES_PATH = "v1/traces"
PROTOCOL = "http/protobuf"  # the one OTLP transport this service speaks


def _value(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _exporter_asked(environ: Mapping[str, str]) -> bool:
    """Whether the variables ask for traces: OTLP named, or an OTLP endpoint given."""
    exporter = _value(environ, "OTEL_TRACES_EXPORTER").lower()
    if exporter in ("", "otlp", "none"):
        endpoint_set = any(
            _value(environ, name)
            for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        return exporter == "otlp" or (exporter == "" and endpoint_set)
    raise StartupError(
        f"OTEL_TRACES_EXPORTER={exporter}: this service exports traces over OTLP only "
        "(set otlp, or none for no traces)"
    )


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """The URL spans are posted to, or None when tracing is off (module docstring).

    StartupError for a setting the service cannot honour (another exporter or protocol)."""
    if _value(environ, "OTEL_SDK_DISABLED").lower() == "true" or not _exporter_asked(environ):
        return None
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = _value(environ, name)
        if protocol:  # the traces' own setting wins over the general one
            if protocol != PROTOCOL:
                raise StartupError(
                    f"{name}={protocol}: this service exports traces over OTLP/HTTP with "
                    f"protobuf only ({PROTOCOL})"
                )
            break
    if endpoint := _value(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return endpoint  # the signal's own URL, used as it is
    if base := _value(environ, "OTEL_EXPORTER_OTLP_ENDPOINT"):
        return f"{base.rstrip('/')}/{TRACES_PATH}"
    return DEFAULT_ENDPOINT


def _resource() -> Resource:
    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    name = str(named) if named else DEFAULT_SERVICE_NAME
    return Resource.create({SERVICE_NAME: name, SERVICE_VERSION: __version__})


def start_tracing(endpoint: str) -> TracerProvider:
    """The SDK provider exporting to ``endpoint`` in batches, made the global one."""
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def configure_tracing(app: FastAPI, environ: Mapping[str, str]) -> TracerProvider | None:
    """Tracing for ``app`` when the variables ask for it; None, and nothing set up, when not."""
    endpoint = traces_endpoint(environ)
    if endpoint is None:
        return None
    provider = start_tracing(endpoint)
    # No span per ASGI message: a large upload arrives in hundreds of them.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, exclude_spans=["receive", "send"]
    )
    service_name = provider.resource.attributes.get(SERVICE_NAME)
    log.info("tracing: spans of %s exported over OTLP/HTTP to %s", service_name, endpoint)
    return provider
