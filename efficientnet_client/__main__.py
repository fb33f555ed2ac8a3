"""``efficientnet-classify photo.jpg [more ...]``: see ``--help`` for options and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from tqdm import tqdm

from . import render
from .client import Request, classify_files
from .outcome import Outcome, Status, exit_code

PROG = "efficientnet-classify"
DEFAULT_URL = "http://127.0.0.1:8000"
EPILOG = """exit codes:
  0  every image classified
  2  bad arguments (unknown option, bad value, missing or unreadable file)
  3  the server is unreachable
  4  the server rejected at least one image (not an image, corrupt, too large)
  5  the server failed (5xx, timeout, still busy after retries, malformed reply)
  6  the API key is missing or wrong
When files fail in different ways, the most fundamental problem wins: 3, then 6, 5, 4.

environment: EFFICIENTNET_URL, EFFICIENTNET_API_KEY (defaults for --url, --api-key)"""


def _int_in(low: int, high: int) -> type:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse  # type: ignore[return-value]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Classify images with a running EfficientNet service (HTTP POST /classify).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument(
        "--url",
        default=os.environ.get("EFFICIENTNET_URL", DEFAULT_URL),
        help=f"service base URL (env EFFICIENTNET_URL, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--top-k",
        type=_int_in(1, 1000),
        default=None,
        help="labels per image, at most the model's class count (default 5, or every class of "
        "a model with fewer)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("EFFICIENTNET_API_KEY") or None,
        help="bearer token when the server sets one (env EFFICIENTNET_API_KEY)",
    )
    parser.add_argument(
        "--concurrency", type=_int_in(1, 256), default=8, help="uploads in flight (default 8)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default 60)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad arguments before any network traffic (exit code 2)."""
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must start with http:// or https://, got {args.url!r}")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    for path in args.images:
        if not path.is_file():
            parser.error(f"{path}: no such file")
        if not os.access(path, os.R_OK):
            parser.error(f"{path}: not readable")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    request = Request(
        url=args.url.rstrip("/"),
        top_k=args.top_k,
        api_key=args.api_key,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
    )
    with tqdm(total=len(args.images), unit="img", file=sys.stderr, disable=args.no_progress) as bar:

        def done(_outcome: Outcome) -> None:
            bar.update(1)

        outcomes = asyncio.run(classify_files(args.images, request, done))
    for outcome in outcomes:
        if outcome.status is not Status.OK:
            print(f"{PROG}: {render.error_line(outcome)}", file=sys.stderr)
    if args.json:
        print(render.machine(request.url, outcomes))
    elif any(o.status is Status.OK for o in outcomes):
        print(render.human(outcomes))
    return int(exit_code(outcomes))


if __name__ == "__main__":
    sys.exit(main())
