"""onnxruntime's telemetry is off before the first session, in the service and in the exporter
(model_contract/telemetry.py). Each case runs in a fresh interpreter that starts with the
opt-out variables unset and onnxruntime not imported, and watches the real package: every
InferenceSession must be created with both variables at "1" and right after
disable_telemetry_events()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPT_OUT = ("ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED")

# Imports `package` and records, in order, each disable_telemetry_events() call and each
# session's view of the environment; then runs `work`. Prints the record as JSON.
WATCH = """
import json, os, sys
opt_out = {opt_out!r}
assert not any(name in os.environ for name in opt_out), "the test must start without them"
import {package}
assert all(os.environ.get(name) == "1" for name in opt_out), "not set by importing {package}"
assert "onnxruntime" not in sys.modules, "{package} imported onnxruntime before opting out"

import onnxruntime
events = []
real_disable = onnxruntime.disable_telemetry_events
def disable():
    events.append("disable")
    real_disable()
onnxruntime.disable_telemetry_events = disable
real_init = onnxruntime.InferenceSession.__init__
def init(self, *args, **kwargs):
    events.append("session " + " ".join(os.environ.get(name, "unset") for name in opt_out))
    real_init(self, *args, **kwargs)
onnxruntime.InferenceSession.__init__ = init

{work}
print("EVENTS " + json.dumps(events))
"""

SERVICE_WORK = """
from service.config import load_settings
from service.pipeline.session import ModelSession
ModelSession.load(load_settings(model_path={model!r}, variant="lite0", device="cpu"))
"""

EXPORT_WORK = """
import runpy
sys.argv = ["model_export", "--variant", "lite0", "--weights", "random", "--output-dir", {out!r}]
try:
    runpy.run_module("model_export", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
"""


def _watch(package: str, work: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in OPT_OUT}
    env["OMP_NUM_THREADS"] = "2"
    script = WATCH.format(opt_out=OPT_OUT, package=package, work=work)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("EVENTS ")]
    return json.loads(line.removeprefix("EVENTS "))


def _assert_each_session_opted_out(events: list[str]) -> None:
    sessions = [i for i, event in enumerate(events) if event.startswith("session")]
    assert sessions, f"no session was created: {events}"
    for i in sessions:
        assert events[i] == "session 1 1", events
        assert i > 0 and events[i - 1] == "disable", f"session without disable before: {events}"


def test_the_service_opts_out_before_its_first_session(lite0_onnx: Path) -> None:
    events = _watch("service", SERVICE_WORK.format(model=str(lite0_onnx)))
    _assert_each_session_opted_out(events)


@pytest.mark.slow
def test_the_exporter_opts_out_before_its_verification_session(tmp_path: Path) -> None:
    events = _watch("model_export", EXPORT_WORK.format(out=str(tmp_path)))
    _assert_each_session_opted_out(events)
    assert (tmp_path / "efficientnet_lite0.onnx").is_file()


def test_the_opt_out_is_forced_over_the_environment() -> None:
    """A stray ORT_DISABLE_TELEMETRY=0 in the environment does not switch telemetry on."""
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "0", "ORT_TELEMETRY_DISABLED": "false"}
    code = "import os, service; print(os.environ['ORT_DISABLE_TELEMETRY'], "
    code += "os.environ['ORT_TELEMETRY_DISABLED'])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["1", "1"]
