"""What happened to each file, and the process exit code that sums them up."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Distinct, documented exit codes (README, ``--help``)."""

    OK = 0  # every image classified
    USAGE = 2  # bad arguments: unknown option, bad value, missing or unreadable file
    UNREACHABLE = 3  # could not connect to the server
    REJECTED = 4  # the server refused at least one image (400/413/415/422: not a usable image)
    SERVER_ERROR = 5  # the server failed (5xx, timeout, busy after retries, malformed reply)
    UNAUTHORIZED = 6  # the API key is missing or wrong (401/403)


class Status(Enum):
    OK = "ok"
    REJECTED = "rejected"
    UNAUTHORIZED = "unauthorized"
    SERVER_ERROR = "server_error"
    UNREACHABLE = "unreachable"


# When files fail differently, the code names the most fundamental problem: nothing below an
# unreachable server or a wrong key is worth reporting first.
_PRECEDENCE = [
    (Status.UNREACHABLE, ExitCode.UNREACHABLE),
    (Status.UNAUTHORIZED, ExitCode.UNAUTHORIZED),
    (Status.SERVER_ERROR, ExitCode.SERVER_ERROR),
    (Status.REJECTED, ExitCode.REJECTED),
]


@dataclass(frozen=True)
class Outcome:
    file: str
    status: Status
    result: dict[str, Any] | None = None  # the service's ClassifyResponse JSON
    http_status: int | None = None
    error_code: str | None = None
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.status is Status.OK:
            assert self.result is not None
            return {"file": self.file, "ok": True, **self.result}
        return {
            "file": self.file,
            "ok": False,
            "status": self.status.value,
            "http_status": self.http_status,
            "error": {"code": self.error_code, "message": self.message},
        }


def exit_code(outcomes: list[Outcome]) -> ExitCode:
    seen = {o.status for o in outcomes}
    for status, code in _PRECEDENCE:
        if status in seen:
            return code
    return ExitCode.OK
