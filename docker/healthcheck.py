#!/usr/bin/env python3
"""Container health probe: exit 0 when the URL answers 2xx, else 1.

The slim image has no curl, and the standard library is enough. Docker's HEALTHCHECK points it
at /readyz, which answers 503 until the model is loaded and warmed up.
"""

import os
import sys
import urllib.error
import urllib.request

# The port the entrypoint binds (EFFICIENTNET_PORT, default 8000), so one HEALTHCHECK fits any.
# (A service link's EFFICIENTNET_PORT=tcp://IP:PORT is not a port: the entrypoint used 8000.)
_PORT = os.environ.get("EFFICIENTNET_PORT", "8000")
DEFAULT_URL = f"http://127.0.0.1:{_PORT if _PORT.isdigit() else '8000'}/readyz"
TIMEOUT_S = 4.0


def probe(url: str, timeout_s: float = TIMEOUT_S) -> int:
    """Return the process exit code for one GET of `url`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 4xx/5xx, /readyz's 503 among them
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, DNS
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300:
        return 0
    print(f"unhealthy: {url} answered {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL))
