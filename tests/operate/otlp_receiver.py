"""A real OTLP/HTTP trace endpoint on loopback for the tests: ``POST /v1/traces`` takes an
``ExportTraceServiceRequest`` in protobuf (gzip or not), as a collector does, and keeps it."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class Received:
    """One span as exported, with the ``service.name`` of the resource that sent it."""

    span: Span
    service_name: str


class OtlpReceiver:
    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.refused: list[str] = []  # what was not an OTLP/HTTP protobuf export
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != PROTOBUF:
                    receiver.refused.append(f"{self.path} {self.headers.get('Content-Type')}")
                    self.send_error(404)
                    return
                receiver.keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", PROTOBUF)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:  # quiet: pytest shows what failed
                pass

        return Handler

    def keep(self, export: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.exports.append(export)

    def spans(self) -> list[Received]:
        with self._lock:
            exports = list(self.exports)
        found = []
        for export in exports:
            for resource_spans in export.resource_spans:
                attributes = {a.key: a.value for a in resource_spans.resource.attributes}
                name = attributes["service.name"].string_value
                for scope_spans in resource_spans.scope_spans:
                    found.extend(Received(span, name) for span in scope_spans.spans)
        return found

    def wait_for(
        self, done: Callable[[list[Received]], bool], timeout_s: float = 15.0
    ) -> list[Received]:
        """The spans received once ``done`` says they are all there; fails after the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({(r.span.trace_id.hex(), r.span.name) for r in spans})
                raise AssertionError(f"spans not received within {timeout_s} s; got {names}")
            time.sleep(0.05)

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
