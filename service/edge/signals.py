"""A shutdown signal shortens the decodes before uvicorn's own handler starts its drain."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def before_exit_signal(action: Callable[[], None]) -> Callable[[], None]:
    """On SIGTERM/SIGINT run ``action``, then uvicorn's handler; returns the undo.

    uvicorn installs its handlers before the lifespan starts; this wraps them until the
    lifespan ends (the returned function puts them back). Off the main thread (the tests'
    in-thread servers) signals cannot be handled: the lifespan's end closes the decoder anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wrapped: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            action()
            previous(signum, frame)

        signal.signal(sig, handler)
        wrapped[sig] = previous

    def restore() -> None:
        for sig, previous in wrapped.items():
            signal.signal(sig, previous)

    return restore
