"""The training tests' helpers: the digits folder's shape, the outputs of one run (`Trained`),
and the command run as a user runs it (`train`). The fixtures are in conftest.py."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from live_server import ROOT, clean_env

PER_CLASS = 40  # 32 train + 8 held out per digit: ~400 images, ~10 s of features on 2 cores
NAME = "digits"
TRAIN_TIMEOUT_S = 600
JUNK = {"3/notes.txt": b"not an image\n", "7/broken.png": b"\x89PNG\r\n\x1a\n truncated"}


@dataclass(frozen=True)
class Trained:
    data: Path
    output: Path
    stdout: str
    stderr: str

    @property
    def onnx(self) -> Path:
        return self.output / f"{NAME}.onnx"

    @property
    def checkpoint(self) -> Path:
        return self.output / f"{NAME}.pth"

    @property
    def report_dir(self) -> Path:
        return self.output / f"{NAME}-report"

    def report(self) -> dict[str, Any]:
        return json.loads((self.report_dir / "report.json").read_text())


def train(*args: str, timeout: float = TRAIN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`python -m model_export train ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "model_export", "train", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
