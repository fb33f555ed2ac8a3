"""No user-supplied text is used as a log format string.

Format directives from the client (``%s``, ``%(x)s``, ``{}``, ``%n``) travel in every place
a request can carry text — path, query, headers, multipart filename and field names, the
Content-Type — while the access log and the service's own logs are on. A logger that used such
text as its format would raise inside logging ("--- Logging error ---" on stderr) or print
mangled lines; the server must answer each normally and log every line intact.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
from live_server import ROOT, Server
from reliability_helpers import assert_error_shape

NASTY = "%s %(x)s {} {0} %n %%"
MARKER = "fmt-probe-7d1c"


def test_format_directives_from_clients_are_logged_verbatim(served: Server, photos: dict) -> None:
    cat = photos["chelsea"].path.read_bytes()
    headers = {"User-Agent": f"{MARKER} {NASTY}", "X-Request-Id": NASTY, "Referer": NASTY}
    path_probe = f"/{MARKER}/{quote(NASTY)}"
    with httpx.Client(base_url=served.url, headers=headers, timeout=30) as client:
        offset = len(served.log_text())
        ok = client.post("/classify", files={"file": (NASTY, cat, "image/jpeg")})
        assert ok.status_code == 200, ok.text
        batch = client.post(
            f"/classify/batch?{MARKER}={quote(NASTY)}",
            files=[("file", (NASTY, b"not an image", "image/jpeg")), ("file", (NASTY, cat))],
        )
        assert batch.status_code == 200, batch.text
        assert [r["filename"] for r in batch.json()["results"]] == [NASTY, NASTY]
        assert [r["status_code"] for r in batch.json()["results"]] == [415, 200]
        odd_type = client.post("/classify", content=cat, headers={"content-type": f"x/{NASTY}"})
        assert_error_shape(odd_type, {415})
        assert NASTY in odd_type.json()["error"]["message"]  # echoed as data, unformatted
        assert_error_shape(client.get(path_probe), {404})
        assert_error_shape(client.post(f"/classify?top_k={quote(NASTY)}", content=cat), {422})
        assert client.get("/healthz").status_code == 200
    time.sleep(0.5)  # let the server flush its log lines
    log = served.log_text()[offset:]
    assert "Logging error" not in log and "Traceback" not in log, log
    # The access log carries the client's path and query as they were sent, directives intact.
    assert f"{MARKER}={quote(NASTY)}" in log, log
    assert path_probe in log, log
    served.assert_alive()


LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


def _is_logger(receiver: ast.expr) -> bool:
    """``log``, ``logger``, ``logging``, ``self._log``, ...: not e.g. a Prometheus Info's .info."""
    name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
    return name.lower().strip("_").endswith(("log", "logger", "logging"))


def _format_args(tree: ast.AST) -> Iterator[tuple[int, ast.expr]]:
    """The format-string argument of every logging-looking call (``x.info(fmt, ...)``)."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in LOG_METHODS or not _is_logger(node.func.value):
            continue
        position = 1 if node.func.attr == "log" else 0
        if len(node.args) > position:
            yield node.lineno, node.args[position]


def test_service_log_formats_are_literals() -> None:
    """Statically: every logging call in service/ has a literal format string, so request text
    can only ever reach a log as an argument (the black-box test above checks the effect)."""
    offenders = []
    calls = 0
    for path in sorted((ROOT / "service").rglob("*.py")):
        for line, fmt in _format_args(ast.parse(path.read_text(), str(path))):
            calls += 1
            if not (isinstance(fmt, ast.Constant) and isinstance(fmt.value, str)):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {ast.unparse(fmt)}")
    assert calls > 0, "found no logging calls: the scan is broken"
    assert not offenders, offenders
