"""Each peer's own virtual environment under `.venv-peers/<peer>` (git-ignored), created from
the pinned `benchmarks/peers/<peer>/requirements.txt` and re-installed only when that file
changes (a stamp keyed on its hash, like the Makefile's for `.venv`). Their dependencies clash
with ours and with each other (torch for TorchServe, numpy 1.x for PyTriton)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS_DIR = Path(__file__).resolve().parent
VENVS_DIR = REPO / ".venv-peers"


def requirements(peer: str) -> Path:
    return PEERS_DIR / peer / "requirements.txt"


def _stamp(peer: str) -> Path:
    digest = hashlib.sha256(requirements(peer).read_bytes()).hexdigest()[:12]
    return VENVS_DIR / peer / f".installed-{digest}"


def venv_bin(peer: str) -> Path:
    return VENVS_DIR / peer / "bin"


def ensure_venv(peer: str) -> Path:
    """The peer's venv `bin/` directory, installed first if missing or stale."""
    stamp = _stamp(peer)
    if stamp.is_file():
        return venv_bin(peer)
    venv = VENVS_DIR / peer
    # The same interpreter as ours (not whatever `python3` is first on PATH).
    base = getattr(sys, "_base_executable", sys.executable)
    print(f"  installing {peer}'s venv in {venv} from {requirements(peer)}", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    done = subprocess.run(
        [*pip, "--disable-pip-version-check", "-r", str(requirements(peer))],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing {peer}'s venv failed:\n{done.stderr[-3000:]}")
    for old in venv.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return venv_bin(peer)


def version(peer: str, dist: str) -> str:
    """A distribution's version as installed in the peer's venv."""
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    done = subprocess.run(
        [str(venv_bin(peer) / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"
