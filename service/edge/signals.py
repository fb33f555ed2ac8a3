"""The service's own signal handling: a shutdown signal drains before uvicorn's handler starts
its shutdown; SIGHUP reloads the model."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any


def before_exit_signal(
    drain: Callable[[], None], shutdown: Callable[[], None], delay_s: float = 0.0
) -> Callable[[], None]:
    """On SIGTERM/SIGINT run ``drain`` at once, then after ``delay_s`` ``shutdown`` and uvicorn's
    handler (a second signal meanwhile cuts the delay short); returns the undo.

    uvicorn installs its handlers before the lifespan starts; this wraps them until the
    lifespan ends. Off the main thread (the tests' in-thread servers) signals cannot be handled:
    the lifespan's end closes the decoder anyway. Both actions only set flags, so the delay
    runs on a timer thread and needs nothing from the event loop.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wrapped: dict[int, Any] = {}
    pending: list[threading.Timer] = []
    lock = threading.Lock()

    def finish(previous: Any, signum: int, frame: Any) -> None:
        shutdown()
        previous(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            with lock:
                first = not pending
                if first and delay_s > 0:
                    drain()
                    timer = threading.Timer(delay_s, finish, (previous, signum, frame))
                    timer.daemon = True
                    pending.append(timer)
                    timer.start()
                    return
                for timer in pending:
                    timer.cancel()
            if first:
                drain()
            finish(previous, signum, frame)

        signal.signal(sig, handler)
        wrapped[sig] = previous

    def restore() -> None:
        for timer in pending:
            timer.cancel()
        for sig, previous in wrapped.items():
            signal.signal(sig, previous)

    return restore


def on_reload_signal(reload: Callable[[], None]) -> Callable[[], None]:
    """SIGHUP runs ``reload`` on the running event loop; returns the undo (no-op off the main
    thread, where the loop cannot take signals)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)
    return lambda: loop.remove_signal_handler(signal.SIGHUP)
