"""uvicorn's warnings, each distinct one at most once per ``LOG_EVERY_S``: a flood of refused
requests must not write a line each."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

LOG_EVERY_S = 10.0


class QuietLogger:
    """uvicorn's logger, but each distinct warning at most once per ``LOG_EVERY_S``."""

    # One record for all connections: a flood is spread over many.
    _last: ClassVar[
        dict[str, tuple[float, int]]
    ] = {}  # message → (when last logged, suppressed since)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(msg, (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._last[msg] = (last, suppressed + 1)
            return
        self._last[msg] = (now, 0)
        text = msg % args if args else msg
        more = (
            f" ({suppressed} more in the last {now - last:.0f} s, not logged)" if suppressed else ""
        )
        self._logger.warning("%s%s", text, more, **kwargs)
