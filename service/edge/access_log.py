"""uvicorn's logging, with the request id at the end of each access log line:
``INFO:     127.0.0.1:50312 - "POST /classify HTTP/1.1" 200 request_id=4bf92f35…``."""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from service.request_id import current_request_id


class RequestIdFilter(logging.Filter):
    """Gives each access record the id of the request it is about.

    uvicorn writes the line from inside the app's ``send``, in the request's own task, where
    the middleware has set ``current_request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get() or "-"
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration, its access lines ending in the request id."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["access"]["fmt"] += " request_id=%(request_id)s"
    config["filters"] = {"request_id": {"()": RequestIdFilter}}
    config["handlers"]["access"]["filters"] = ["request_id"]
    return config
