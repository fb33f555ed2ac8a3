"""Keep onnxruntime from sending telemetry about the models it runs.

onnxruntime's official Linux builds (1.29+) ship Microsoft's 1DS telemetry, on by default; its
session events carry model file and graph names, producer and weight hashes. An inference
service must not report on its users' models, so the opt-out is applied twice:

- the environment variables, set when this module is imported (``model_contract/__init__.py``,
  which both wings import first), i.e. before onnxruntime is imported and initialised;
  ``ORT_DISABLE_TELEMETRY`` is the one onnxruntime documents (docs/Privacy.md), the other one
  is its older spelling;
- ``onnxruntime.disable_telemetry_events()``, called right before each session is created,
  for builds that honour only the API.

The values are forced, not defaulted: there is no supported way to switch telemetry back on.
"""

from __future__ import annotations

import os

OPT_OUT_ENV = {"ORT_DISABLE_TELEMETRY": "1", "ORT_TELEMETRY_DISABLED": "1"}


def apply_env() -> None:
    """Set the opt-out variables in this process (inherited by its children)."""
    os.environ.update(OPT_OUT_ENV)


def disable_events() -> None:
    """Turn onnxruntime's telemetry events off; call it before creating a session."""
    import onnxruntime  # lazily: importing this module must not load onnxruntime early

    onnxruntime.disable_telemetry_events()


apply_env()
