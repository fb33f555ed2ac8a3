"""``python -m service`` / ``efficientnet-serve``: check settings and model, then serve."""

from __future__ import annotations

import argparse
import logging
import sys

from service.errors import StartupError

PROG = "efficientnet-serve"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve an EfficientNet classifier (ImageNet or your own classes) over HTTP. "
        "All settings are EFFICIENTNET_* environment variables (see docs/api.md); flags "
        "override host and port.",
    )
    parser.add_argument("--host", help="bind address (EFFICIENTNET_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="bind port (EFFICIENTNET_PORT, default 8000)")
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="EFFICIENTNET_LOG_LEVEL, default info",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    overrides = {
        k: v for k, v in (("host", args.host), ("port", args.port), ("log_level", args.log_level))
        if v is not None
    }  # fmt: skip
    # Imported here so `--help` stays instant and import errors surface as what they are.
    from service.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread allocates (service/memory.py)

    from service.app import create_app
    from service.config import load_settings
    from service.edge.server import Server, uvicorn_config
    from service.pipeline.session import ModelSession

    try:
        settings = load_settings(**overrides)
        logging.basicConfig(
            level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s"
        )
        # Load before binding the port: a bad model is one clear line and exit code 2,
        # not a traceback from inside uvicorn's lifespan.
        session = ModelSession.load(settings)
        app = create_app(settings, session=session)  # a bad OTEL_* value is refused here
    except StartupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn_config(
        app, settings, host=settings.host, port=settings.port, access_log=args.access_log
    )
    Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
