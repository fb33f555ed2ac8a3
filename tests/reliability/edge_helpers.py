"""What the protocol-edge attack tests share: raw sockets written by hand, a small real photo,
and the check that honest clients keep being served while an attack runs."""

from __future__ import annotations

import io
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import skimage.data
from live_server import Server
from PIL import Image

# An honest request must be answered 200 within this while an attack runs: on the shared
# 2-core CI machine a Lite0 classification takes well under a second.
HONEST_S = 5.0


def small_photo(size: int = 160) -> bytes:
    """A real photo (scikit-image's chelsea, a cat) as a small JPEG."""
    image = Image.fromarray(skimage.data.chelsea())
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def assert_honest_served(server: Server, photo: bytes, count: int = 3) -> list[float]:
    """``count`` honest /classify uploads, each 200 within HONEST_S; returns their latencies."""
    latencies = []
    jpeg = {"content-type": "image/jpeg"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(count):
            started = time.monotonic()
            response = client.post("/classify", content=photo, headers=jpeg)
            latency = time.monotonic() - started
            assert response.status_code == 200, (response.status_code, response.text[:300])
            assert latency < HONEST_S, f"honest request took {latency:.1f} s"
            latencies.append(latency)
    return latencies


def connect(server: Server, timeout_s: float = 30) -> socket.socket:
    parts = urlsplit(server.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class AnswerReader:
    """Responses (Content-Length framed) from ``sock`` in order, pipelined ones included."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self, timeout_s: float) -> Answer:
        """The next response; AssertionError if none comes in time."""
        self.sock.settimeout(timeout_s)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return Answer(int(lines[0].split()[1]), headers, rest[:length])

    def _recv(self) -> bytes:
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError("no answer in time") from None
        if not chunk:
            raise AssertionError("connection closed without an answer")
        return chunk


def read_until_closed(
    sock: socket.socket, timeout_s: float, reader: AnswerReader | None = None
) -> list[Answer]:
    """Every response still to come on ``sock`` until the server closes it cleanly (a FIN, not a
    reset); AssertionError if it stays open past ``timeout_s`` or ends mid-response."""
    reader = reader or AnswerReader(sock)
    deadline = time.monotonic() + timeout_s
    answers = []
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"still open after {timeout_s} s and {len(answers)} answers"
        sock.settimeout(left)
        if not reader.buffer:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return answers
            reader.buffer = chunk
        answers.append(reader.next(timeout_s=left))


def read_answer(sock: socket.socket, timeout_s: float) -> Answer:
    """One response from ``sock`` (a connection that sent one request)."""
    return AnswerReader(sock).next(timeout_s)


@dataclass
class Pusher:
    """Sends ``payload`` on ``sock`` from a thread, until done, stopped or refused."""

    sock: socket.socket
    payload: bytes
    chunk: int = 256 * 1024
    pause_s: float = 0.0
    sent: int = 0
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        view = memoryview(self.payload)
        try:
            while self.sent < len(view) and not self.stop.is_set():
                self.sock.sendall(view[self.sent : self.sent + self.chunk])
                self.sent += min(self.chunk, len(view) - self.sent)
                if self.pause_s:
                    time.sleep(self.pause_s)
        except OSError as exc:  # the server closed on us
            self.error = type(exc).__name__


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
