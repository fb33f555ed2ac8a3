"""Which index to take PyTorch from: its CPU wheels when their index answers quickly, else none.

The exporter runs PyTorch once, on the CPU; PyPI's Linux torch is the CUDA build, which pulls
~4 GB of ``nvidia-*`` and ``triton`` wheels the service never uses. PyTorch's CPU index serves
``torch-X+cpu`` (a local version, which pip ranks above PyPI's plain ``X``), so adding it as an
extra index makes pip take the CPU build. The probe is bounded as a whole (DNS included), so an
unreachable index costs at most ``--timeout`` seconds instead of pip's retries and timeouts.

    python tools/torch_index.py https://download.pytorch.org/whl/cpu   # the Makefile's use

Prints pip's arguments (``--extra-index-url URL``) on stdout, or nothing; says on stderr which
it chose and why. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 3.0
# A PEP 503 project page lists one link per file; one torch wheel is enough to call it an index.
WHEEL = re.compile(r"""href=["'][^"']*torch-[^"'/]+\.whl""", re.IGNORECASE)


@dataclass(frozen=True)
class Probe:
    reachable: bool
    reason: str  # why it is or is not usable, for the message on stderr


def _fetch(url: str, timeout_s: float) -> Probe:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            page = response.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
        return Probe(False, str(getattr(exc, "reason", exc)))
    if not WHEEL.search(page):
        return Probe(False, f"{url} lists no torch wheels")
    return Probe(True, f"{url} lists torch wheels")


def probe(index: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Probe:
    """Whether ``index`` (a PEP 503 simple index) serves torch wheels, within ``timeout_s``."""
    url = index.rstrip("/") + "/torch/"
    result: list[Probe] = []
    # urlopen's timeout does not cover name resolution: bound the whole attempt in a thread
    # (a daemon, so a resolver still hanging does not hold the process at exit).
    worker = threading.Thread(target=lambda: result.append(_fetch(url, timeout_s)), daemon=True)
    worker.start()
    worker.join(timeout_s)
    return result[0] if result else Probe(False, f"no answer within {timeout_s:g} s")


def pip_args(index: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[list[str], Probe]:
    found = probe(index, timeout_s)
    return (["--extra-index-url", index] if found.reachable else []), found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", help="PyTorch's CPU wheel index (a PEP 503 simple index)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds, all in")
    args = parser.parse_args(argv)
    extra, found = pip_args(args.index, args.timeout)
    if extra:
        print(f"torch: CPU wheels from {args.index} ({found.reason})", file=sys.stderr)
    else:
        print(
            f"torch: {args.index} not usable ({found.reason}); taking torch from the default "
            "index (on Linux from PyPI that is the CUDA build, ~4 GB more)",
            file=sys.stderr,
        )
    print(" ".join(extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
