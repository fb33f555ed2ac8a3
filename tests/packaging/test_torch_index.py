"""tools/torch_index.py, the Makefile's choice of PyTorch index: the CPU wheels' index when it
answers with torch wheels, else nothing (pip's default index), always within the timeout."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from pkg_helpers import ROOT
from torch_index_helpers import closed_port_url, index_server, silent_server, stand_in_index

TOOL = ROOT / "tools" / "torch_index.py"


def choose(index: str, timeout_s: float = 3.0) -> tuple[str, str, float]:
    """(stdout, stderr, seconds) of the tool as the Makefile runs it."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(TOOL), index, "--timeout", str(timeout_s)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # never fails the install: it only chooses
    return done.stdout.strip(), done.stderr, time.monotonic() - started


def test_a_reachable_cpu_index_is_added_for_pip() -> None:
    with stand_in_index() as url:
        out, err, _ = choose(url)
    assert out == f"--extra-index-url {url}"
    assert "CPU wheels" in err


def test_a_trailing_slash_is_the_same_index() -> None:
    with stand_in_index() as url:
        out, _, _ = choose(url + "/")
    assert out == f"--extra-index-url {url}/"


def test_a_closed_port_falls_back_at_once() -> None:
    out, err, seconds = choose(closed_port_url())
    assert out == ""
    assert "not usable" in err and "refused" in err.lower()
    assert seconds < 10  # an interpreter start, not a timeout


def test_an_index_that_never_answers_costs_only_the_timeout() -> None:
    with silent_server() as url:
        out, err, seconds = choose(url, timeout_s=1.0)
    assert out == ""
    assert "not usable" in err
    assert seconds < 10  # 1 s of probe plus an interpreter start; pip's own wait is 180 s x 5


@pytest.mark.parametrize(
    "pages",
    [{}, {"/whl/cpu/torch/": b"<html><body>maintenance</body></html>"}],
    ids=["404", "no-wheels"],
)
def test_a_server_that_is_not_a_torch_index_is_not_used(pages: dict[str, bytes]) -> None:
    with index_server(pages) as base:
        out, err, _ = choose(f"{base}/whl/cpu")
    assert out == ""
    assert "not usable" in err
