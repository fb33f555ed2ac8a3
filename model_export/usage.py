"""How every exporter command refuses: exit status 2 and one `error: ...` line on stderr."""

from __future__ import annotations

import argparse
import sys

USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        # One line (argparse would print the usage first); `--help` shows the usage.
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(USER_ERROR)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def refuse(exc: BaseException) -> int:
    """Print `exc` as the one error line; the exit status to return."""
    print(f"error: {one_line(exc)}", file=sys.stderr)
    return USER_ERROR
