"""The uvicorn internals service/edge/ builds on, checked by name against the installed uvicorn.

service/edge/ subclasses uvicorn's HTTP protocol (protocol.py: header timeout, lingering close) and
its Server (server.py: exit 0 after a drain), so it reads and overrides attributes uvicorn does
not promise to keep.
pyproject.toml pins the uvicorn range it was written against; when a release renames or drops
one of these, this test fails naming it, instead of the protections silently switching off.
The behaviour itself is tested over real sockets in tests/reliability (test_rel_bodies,
test_rel_faults) and tests/service/test_startup.py.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from service_helpers import READY_TIMEOUT_S, settings_for
from uvicorn.protocols.http import flow_control
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.app import create_app
from service.edge.lingering import LingeringTransport
from service.edge.protocol import HardenedHTTPProtocol
from service.edge.server import Server, uvicorn_config

# The protocol methods service/edge/protocol.py overrides (most call super()), with parameters.
OVERRIDDEN = {
    "connection_made": ["self", "transport"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
    "resume_writing": ["self"],
    "eof_received": ["self"],
    "connection_lost": ["self", "exc"],
    "_start_asgi_task": ["self", "cycle", "app"],
}
# uvicorn's methods protocol.py calls without overriding them: it feeds httptools' parser itself
# (one request at a time), so it must answer parse errors and upgrades the way uvicorn would.
CALLED = {
    "_unset_keepalive_if_required": ["self"],
    "handle_websocket_upgrade": ["self"],
}


def need(obj: Any, name: str, why: str) -> Any:
    """``obj.name``, or a failure that names the attribute, the uvicorn release and the use."""
    owner = obj.__qualname__ if isinstance(obj, type) else type(obj).__qualname__
    assert hasattr(obj, name), (
        f"uvicorn {uvicorn.__version__}: {owner}.{name} is gone; service/edge/ relies on it "
        f"({why}). Adapt service/edge/protocol.py to this release or keep uvicorn within the pin."
    )
    return getattr(obj, name)


def test_the_protocol_methods_the_edge_overrides_or_calls_still_exist() -> None:
    # HardenedHTTPProtocol subclasses HttpToolsProtocol itself (uvicorn[standard] installs it).
    base = HttpToolsProtocol
    for name, params in {**OVERRIDDEN, **CALLED}.items():
        why = (
            "HardenedHTTPProtocol overrides it"
            if name in OVERRIDDEN
            else "service/edge/protocol.py calls it"
        )
        method = need(base, name, why)
        got = list(inspect.signature(method).parameters)
        assert got == params, (
            f"uvicorn {uvicorn.__version__}: {base.__qualname__}.{name}{tuple(got)} changed its "
            f"parameters (service/edge/protocol.py was written for {tuple(params)})"
        )


def test_uvicorns_503_past_the_connection_limit_is_still_the_app_the_edge_replaces() -> None:
    """protocol.py gives that 503 its X-Request-ID by recognising uvicorn's app for it."""
    need(flow_control, "service_unavailable", "protocol.py wraps it with the request id")
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "app = service_unavailable" in source, (
        f"uvicorn {uvicorn.__version__}: on_headers_complete no longer starts "
        "flow_control.service_unavailable past limit_concurrency"
    )


def test_server_still_records_the_signals_it_re_raises() -> None:
    server = Server(uvicorn.Config(app=None))
    need(uvicorn.Server, "capture_signals", "Server overrides it to clear the captured signals")
    captured = need(server, "_captured_signals", "Server clears it so a drain exits 0")
    assert captured == []
    # Outside capture_signals nothing is re-raised: handle_exit only records the signal.
    need(server, "handle_exit", "uvicorn's signal handler")(signal.SIGTERM, None)
    assert server._captured_signals == [signal.SIGTERM], (
        f"uvicorn {uvicorn.__version__}: handle_exit no longer records signals in "
        "_captured_signals; Server.capture_signals clears the wrong list"
    )
    assert server.should_exit


def test_config_still_takes_a_protocol_class(lite0_onnx: Path) -> None:
    settings = settings_for(lite0_onnx)
    config = uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=0)
    config.load()
    protocol = need(config, "http_protocol_class", "uvicorn_config passes a class as http=")
    assert issubclass(protocol, HardenedHTTPProtocol), protocol
    assert config.limit_concurrency == settings.max_connections


@pytest.fixture(scope="module")
def served(lite0_onnx: Path) -> Iterator[Server]:
    """The real app under the service's own uvicorn settings, in a thread."""
    settings = settings_for(lite0_onnx)
    config = uvicorn_config(
        create_app(settings), settings, host="127.0.0.1", port=0, log_level="warning"
    )
    server = Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    yield server
    server.should_exit = True
    thread.join(timeout=30)


def _connection(server: Server) -> Any:
    state = need(server, "server_state", "this test finds the live protocol through it")
    for _ in range(500):
        if state.connections:
            return next(iter(state.connections))
        time.sleep(0.01)
    raise AssertionError("no connection registered with uvicorn")


def test_the_protocol_state_the_edge_reads_mid_request(served: Server) -> None:
    port = served.servers[0].sockets[0].getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        # Headers complete, body still coming: the state the lingering close decides on.
        client.sendall(
            b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"\xff" * 10
        )
        protocol = _connection(served)
        assert isinstance(protocol, HardenedHTTPProtocol), type(protocol)
        for _ in range(500):
            if getattr(protocol, "cycle", None) is not None:
                break
            time.sleep(0.01)
        cycle = need(protocol, "cycle", "body_incoming() reads the current request")
        assert cycle is not None, "uvicorn no longer sets .cycle when a request's headers end"
        assert need(cycle, "more_body", "body_incoming(): is the body still coming") is True
        assert need(cycle, "disconnected", "body_incoming(): has the client gone") is False
        assert need(cycle, "response_complete", "re-arming the header timer") is False
        need(cycle, "keep_alive", "a half-closed client's connection closes after its answer")
        # middleware.py's body-rate check looks into the cycle behind the ASGI receive().
        need(cycle, "body", "BodyRate: is any of the body waiting in uvicorn's buffer")
        need(need(cycle, "message_event", "BodyRate: has a chunk arrived"), "is_set", "BodyRate")
        receive = need(cycle, "receive", "the ASGI receive the middleware is handed")
        assert getattr(receive, "__self__", None) is cycle, (
            f"uvicorn {uvicorn.__version__}: receive() is no longer a method of the request "
            "cycle, so middleware.py's body-rate check cannot see uvicorn's buffer"
        )
        need(
            need(protocol, "parser", "service/edge/protocol.py feeds httptools itself"),
            "feed_data",
            "parser",
        )
        need(protocol, "logger", "service/edge/protocol.py wraps it to log each refusal kind once")
        flow = need(protocol, "flow", "the lingering close pauses/resumes reading")
        need(flow, "pause_reading", "reading stops once LINGER_BYTES are dropped")
        need(flow, "resume_reading", "reading resumes to drain the rest of the body")
        need(flow, "write_paused", "pipelined bytes wait until the client has read its answer")
        need(protocol, "loop", "the header and linger timers are scheduled on it")
        transport = need(protocol, "transport", "uvicorn closes the connection through it")
        assert isinstance(transport, LingeringTransport), (
            f"uvicorn {uvicorn.__version__} no longer keeps the transport given to "
            f"connection_made as .transport (it holds {type(transport).__qualname__}), so the "
            "lingering close never runs"
        )
        assert protocol.body_incoming()

        client.sendall(b"\xff" * 990)  # the rest: a body that is not an image
        answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]  # refused, not a 5xx
        # uvicorn still calls on_response_complete: the header timer is armed for the next one.
        for _ in range(500):
            if protocol._timer is not None:
                break
            time.sleep(0.01)
        assert protocol._timer is not None, (
            f"uvicorn {uvicorn.__version__} no longer calls on_response_complete after a "
            "response: the header timeout is not re-armed between keep-alive requests"
        )


class _Flow:
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class _Parser:
    def should_upgrade(self) -> bool:
        return False


async def test_a_body_piece_reaches_the_app_without_a_copy() -> None:
    """protocol.py's on_body keeps a piece that finds uvicorn's buffer empty as the parser's own
    bytes object; uvicorn's receive() must then hand it to the app as is (``bytes(piece)``), and
    pieces that pile up before the app reads must still arrive whole and in order."""
    flow = _Flow()
    cycle = RequestResponseCycle(
        scope={"type": "http"}, transport=None, flow=flow, logger=None, access_logger=None,
        access_log=False, default_headers=[], message_event=asyncio.Event(),
        expect_100_continue=False, keep_alive=True, on_response=lambda: None,
    )  # fmt: skip
    protocol = HardenedHTTPProtocol.__new__(HardenedHTTPProtocol)
    protocol.cycle, protocol.parser, protocol.flow = cycle, _Parser(), flow
    protocol._body_left = 300_000
    first = bytes(range(256)) * 400
    protocol.on_body(first)
    message = await cycle.receive()
    assert message["body"] is first, "a lone piece was copied on its way to the app"
    rest = [b"\x01" * 100_000, b"\x02" * 97_600]
    for piece in rest:
        protocol.on_body(piece)
    assert (await cycle.receive())["body"] == b"".join(rest)
    assert protocol._body_left == 0
