"""When the OTEL_* variables switch tracing on, where spans go, and that off sets up nothing.

The spans themselves, received by a real OTLP/HTTP endpoint from the real server, are tested in
tests/operate/test_tracing.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from service_helpers import settings_for

from service.app import create_app
from service.errors import StartupError
from service.pipeline import spans
from service.tracing import DEFAULT_ENDPOINT, configure_tracing, traces_endpoint

BASE = "http://collector:4318"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),  # off by default
        ({"OTEL_SERVICE_NAME": "x"}, None),  # a name alone asks for nothing
        ({"OTEL_TRACES_EXPORTER": "otlp"}, DEFAULT_ENDPOINT),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": BASE}, f"{BASE}/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": f"{BASE}/"}, f"{BASE}/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{BASE}/custom"}, f"{BASE}/custom"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t"},
            "http://t",
        ),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": BASE}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": BASE}, None),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, DEFAULT_ENDPOINT),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            DEFAULT_ENDPOINT,
        ),
        (  # the traces' own protocol wins over the general one
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            DEFAULT_ENDPOINT,
        ),
    ],
)
def test_when_tracing_is_on_and_where_spans_go(environ: dict[str, str], expected: str) -> None:
    assert traces_endpoint(environ) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "OTEL_TRACES_EXPORTER=otlp,console"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": BASE, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=json",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_the_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(StartupError, match=named):
        traces_endpoint(environ)


def _middlewares(app: Any) -> list[type]:
    found, layer = [], app.build_middleware_stack()
    while layer is not None:
        found.append(type(layer))
        layer = getattr(layer, "app", None)
    return found


def test_off_sets_up_no_provider_and_no_middleware(lite0_onnx: Path) -> None:
    app = create_app(settings_for(lite0_onnx))
    assert configure_tracing(app, {"OTEL_SERVICE_NAME": "x"}) is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert OpenTelemetryMiddleware not in _middlewares(app)


def test_off_the_stages_make_no_span_object() -> None:
    """Outside a recorded span a stage is one shared do-nothing context manager, and the
    batcher keeps no context."""
    assert spans.stage(spans.DECODE) is spans.stage(spans.ADMISSION)
    with spans.stage(spans.DECODE) as entered:
        assert entered is None
    assert spans.traced_context() is None
