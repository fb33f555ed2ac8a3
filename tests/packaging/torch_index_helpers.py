"""A stand-in for PyTorch's CPU wheel index on 127.0.0.1, and a URL nothing answers on.

The stand-in serves a PEP 503 project page for ``torch`` like download.pytorch.org/whl/cpu
does (the links are what tools/torch_index.py looks for; it never downloads them).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

WHEELS = [f"torch-2.14.1+cpu-cp3{minor}-cp3{minor}-manylinux_2_28_x86_64.whl" for minor in (11, 12)]
TORCH_PAGE = (
    "<!DOCTYPE html>\n<html><body><h1>Links for torch</h1>\n"
    + "".join(
        f'<a href="/whl/cpu/{w.replace("+", "%2B")}#sha256=00">{w}</a><br/>\n' for w in WHEELS
    )
    + "</body></html>\n"
).encode()


class _Index(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, bytes]] = {}  # path → body; anything else is 404

    def do_GET(self) -> None:
        body = self.pages.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body or b"not found")

    def log_message(self, *args: object) -> None:  # quiet in the test output
        pass


@contextmanager
def index_server(pages: dict[str, bytes]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering `pages`; yields its base URL."""
    handler = type("Index", (_Index,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def stand_in_index() -> Iterator[str]:
    """PyTorch's CPU index as pip sees it; yields the index URL (…/whl/cpu)."""
    with index_server({"/whl/cpu/torch/": TORCH_PAGE}) as base:
        yield f"{base}/whl/cpu"


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers (a stalled proxy); yields an index URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/whl/cpu"


def closed_port_url() -> str:
    """An index URL on a port nothing listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"
