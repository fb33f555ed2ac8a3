"""The floor under the service's event loop: uvicorn with the service's own event loop and HTTP
parser (``loop="auto"``, uvloop when installed, as the service has; httptools) around an ASGI
app that only reads each request's body and answers a fixed JSON of ``/classify``'s size. What
``loop_cost`` measures here is what a request costs the loop before any of the service's code
runs (framework, middleware, upload parsing, pipeline).

    python -m benchmarks.bare_server --port 8000
"""

from __future__ import annotations

import argparse
import json
import sys

import uvicorn
from starlette.types import Receive, Scope, Send

# An answer the size of the service's to a top-5 /classify (~0.5 kB).
ANSWER = json.dumps(
    {
        "predictions": [{"index": i, "label": f"class {i}", "score": 0.2} for i in range(5)],
        "model": "efficientnet_b0",
        "timing_ms": {"preprocess": 5.0, "queue_wait": 0.0, "inference": 12.0, "total": 17.0},
    }
).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # the whole body, as the service reads an upload
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        app, host=args.host, port=args.port, loop="auto", http="httptools",
        lifespan="on", log_level="warning", access_log=False,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
