"""Traces from the real ``python -m service`` to a real OTLP/HTTP endpoint (otlp_receiver.py),
decoded from the protobuf it posts: one request's spans join the caller's W3C trace, with the
four stage spans under the server span; tracing off sends nothing at all."""

from __future__ import annotations

import base64
import itertools
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import ROOT, Server, model_env, running_server
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from otlp_receiver import OtlpReceiver, Received, otlp_receiver
from photos import Photo

SERVICE_NAME = "efficientnet-under-test"
STAGES = ("admission", "decode", "queue_wait", "inference")
INFER = "/v2/models/efficientnet_lite0/infer"
# Stage spans are stamped from the perf counter, the server span from the wall clock.
CLOCK_SLACK_NS = 1_000_000
MS = 1e6  # nanoseconds
pytestmark = pytest.mark.slow


def _tracing_env(lite0_onnx: Path, receiver: OtlpReceiver, **more: str) -> dict[str, str]:
    return model_env(
        lite0_onnx,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME=SERVICE_NAME,
        OTEL_BSP_SCHEDULE_DELAY="100",  # export within 0.1 s, not the default 5 s
        **more,
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def traced(
    lite0_onnx: Path, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("traced") / "server.log"
    with running_server(_tracing_env(lite0_onnx, receiver), log) as server:
        yield server


def _traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A caller's trace id, span id and the ``traceparent`` header naming them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def _attributes(span: Span) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def _trace(receiver: OtlpReceiver, trace_id: str) -> dict[str, Span]:
    """The request's server span and its four stage spans, by name, once all are received."""

    def of_trace(spans: list[Received]) -> list[Received]:
        return [r for r in spans if r.span.trace_id.hex() == trace_id]

    def complete(spans: list[Received]) -> bool:
        names = {r.span.name for r in of_trace(spans)}
        kinds = {r.span.kind for r in of_trace(spans)}
        return set(STAGES) <= names and Span.SPAN_KIND_SERVER in kinds

    received = of_trace(receiver.wait_for(complete))
    assert {r.service_name for r in received} == {SERVICE_NAME}
    servers = [r.span for r in received if r.span.kind == Span.SPAN_KIND_SERVER]
    assert len(servers) == 1, [r.span.name for r in received]
    by_name = {r.span.name: r.span for r in received if r.span.kind != Span.SPAN_KIND_SERVER}
    assert sorted(by_name) == sorted(STAGES), [r.span.name for r in received]
    return {"server": servers[0], **by_name}


def _assert_joined(spans: dict[str, Span], caller_span_id: str, request_id: str) -> None:
    """The server span continues the caller's span; every stage descends from it, in order,
    within it."""
    server = spans["server"]
    assert server.parent_span_id.hex() == caller_span_id
    assert _attributes(server)["request.id"] == request_id
    ids = {span.span_id: span for span in spans.values()}
    for name in STAGES:
        span, parent = spans[name], spans[name]
        while parent.span_id != server.span_id:  # walk up: a descendant of the server span
            parent = ids[parent.parent_span_id]
        assert span.start_time_unix_nano <= span.end_time_unix_nano, name
        assert span.start_time_unix_nano >= server.start_time_unix_nano - CLOCK_SLACK_NS, name
        assert span.end_time_unix_nano <= server.end_time_unix_nano + CLOCK_SLACK_NS, name
    order = [spans[name] for name in STAGES]
    for before, after in itertools.pairwise(order):
        assert before.end_time_unix_nano <= after.start_time_unix_nano + CLOCK_SLACK_NS
    # The batcher stamps both from the one moment the batch started.
    assert spans["queue_wait"].end_time_unix_nano == spans["inference"].start_time_unix_nano
    assert spans["decode"].end_time_unix_nano > spans["decode"].start_time_unix_nano
    assert spans["inference"].end_time_unix_nano > spans["inference"].start_time_unix_nano


def _ms(span: Span) -> float:
    return (span.end_time_unix_nano - span.start_time_unix_nano) / MS


def test_classify_joins_the_callers_trace_with_its_four_stages(
    traced: Server, receiver: OtlpReceiver, photos: dict[str, Photo]
) -> None:
    trace_id, caller, traceparent = _traceparent()
    headers = {"traceparent": traceparent, "X-Request-ID": "traced-classify-1"}
    response = httpx.post(
        f"{traced.url}/classify",
        files={"file": ("cat.jpg", photos["chelsea"].path.read_bytes(), "image/jpeg")},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    spans = _trace(receiver, trace_id)
    _assert_joined(spans, caller, "traced-classify-1")
    server = spans["server"]
    assert server.name == "POST /classify"
    attributes = _attributes(server)
    # The instrumentation's semantic conventions: the old by default, the stable on opt-in.
    assert attributes.get("http.status_code", attributes.get("http.response.status_code")) == 200
    # The spans time what the answer's timing_ms reports.
    timing = response.json()["timing_ms"]
    assert _attributes(spans["inference"])["efficientnet.batch_size"] == timing["batch_size"]
    assert abs(_ms(spans["inference"]) - timing["inference"]) < 0.1, (spans, timing)
    assert abs(_ms(spans["queue_wait"]) - timing["queue_wait"]) < 0.1, (spans, timing)
    assert abs(_ms(spans["decode"]) - timing["preprocess"]) < 5, (spans, timing)


def test_an_oip_inference_is_traced_the_same_way(
    traced: Server, receiver: OtlpReceiver, photos: dict[str, Photo]
) -> None:
    trace_id, caller, traceparent = _traceparent()
    encoded = base64.b64encode(photos["coffee"].path.read_bytes()).decode()
    body = {"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES",
                        "data": [encoded]}]}  # fmt: skip
    headers = {"traceparent": traceparent, "X-Request-ID": "traced-oip-1"}
    response = httpx.post(f"{traced.url}{INFER}", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    spans = _trace(receiver, trace_id)
    _assert_joined(spans, caller, "traced-oip-1")
    assert spans["server"].name == "POST /v2/models/{model_name}/infer"
    assert _attributes(spans["inference"])["efficientnet.batch_size"] >= 1


def test_a_caller_that_does_not_sample_gets_no_spans(
    traced: Server, receiver: OtlpReceiver, photos: dict[str, Photo]
) -> None:
    """The caller's sampling decision holds: its request records nothing, stages included."""
    unsampled, _, off = _traceparent(sampled=False)
    sampled, _, on = _traceparent()
    photo = photos["rocket"].path.read_bytes()
    for traceparent in (off, on):
        response = httpx.post(
            f"{traced.url}/classify",
            content=photo,
            headers={"traceparent": traceparent, "content-type": "image/jpeg"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    _trace(receiver, sampled)  # exported after the unsampled one would have been
    assert not [r for r in receiver.spans() if r.span.trace_id.hex() == unsampled]


def test_tracing_off_exports_nothing(
    lite0_onnx: Path, photos: dict[str, Photo], tmp_path: Path
) -> None:
    """OTEL_SDK_DISABLED wins over an exporter and an endpoint: no span reaches the endpoint,
    not even at exit (when a batch processor would flush), and none is set up."""
    with otlp_receiver() as idle:
        env = _tracing_env(lite0_onnx, idle, OTEL_SDK_DISABLED="true")
        with running_server(env, tmp_path / "server.log", "--log-level", "debug") as server:
            _, _, traceparent = _traceparent()
            response = httpx.post(
                f"{server.url}/classify",
                content=photos["chelsea"].path.read_bytes(),
                headers={"traceparent": traceparent, "content-type": "image/jpeg"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"]
            time.sleep(0.5)  # five times the schedule delay the exporter would have had
        log = server.log_text()
        assert idle.exports == [] and idle.refused == []
    assert "tracing:" not in log, log


def test_tracing_on_says_where_spans_go(traced: Server, receiver: OtlpReceiver) -> None:
    line = f"tracing: spans of {SERVICE_NAME} exported over OTLP/HTTP to {receiver.url}/v1/traces"
    assert line in traced.log_text()
    assert receiver.refused == []


def test_a_setting_that_cannot_be_honoured_stops_the_service(lite0_onnx: Path) -> None:
    env = model_env(lite0_onnx, OTEL_TRACES_EXPORTER="zipkin")
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("efficientnet-serve: error: OTEL_TRACES_EXPORTER=zipkin")
    ), done.stderr
