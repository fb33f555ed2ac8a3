"""The session's two ways to run on a CPU: a run that starts alone gets every intra-op thread,
a run that starts while another is running gets the second session with the cores shared; both
give the same logits, and the second session exists only where runs can overlap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from service_helpers import settings_for

from service.pipeline.session import ModelSession


def _threads(session: ort.InferenceSession) -> int:
    return session.get_session_options().intra_op_num_threads


class _Recorded:
    """An onnxruntime session's ``run``, recording each call under ``name`` and, while ``hold``
    is set, waiting for ``release`` inside the run (so that another run overlaps it)."""

    def __init__(self, run: Callable[..., Any], name: str, calls: list[str]) -> None:
        self._run, self._name, self._calls = run, name, calls
        self.hold = False
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args: Any) -> Any:
        self._calls.append(self._name)
        if self.hold:
            self.inside.set()
            self.release.wait(10)
        return self._run(*args)


@pytest.fixture(scope="module")
def model(lite0_onnx: Path) -> ModelSession:
    return ModelSession.load(settings_for(lite0_onnx, intra_op_threads=2, inference_workers=2))


def _image(model: ModelSession, n: int = 1) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, model.crop_size, model.crop_size, 3), dtype=np.uint8)


def test_an_overlapping_run_takes_the_second_session(
    model: ModelSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert model._overlapping is not None
    assert (_threads(model._session), _threads(model._overlapping)) == (2, 1)
    calls: list[str] = []
    alone = _Recorded(model._session.run, "alone", calls)
    overlapping = _Recorded(model._overlapping.run, "overlapping", calls)
    monkeypatch.setattr(model._session, "run", alone)
    monkeypatch.setattr(model._overlapping, "run", overlapping)
    image = _image(model)

    alone.hold = True
    first = threading.Thread(target=model.run, args=(image,))
    first.start()
    assert alone.inside.wait(10)
    model.run(image)  # while the first is inside its run
    alone.hold = False
    alone.release.set()
    first.join(10)
    model.run(image)  # alone again
    assert calls == ["alone", "overlapping", "alone"]


def test_both_sessions_give_the_same_logits(model: ModelSession) -> None:
    assert model._overlapping is not None
    batch = _image(model, 2)
    inputs = {model.input_name: batch}
    alone = model._session.run([model.output_name], inputs)[0]
    overlapping = model._overlapping.run([model.output_name], inputs)[0]
    np.testing.assert_allclose(overlapping, alone, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(overlapping.argmax(1), alone.argmax(1))


@pytest.mark.parametrize(
    "overrides", [{"intra_op_threads": 1}, {"inference_workers": 1, "intra_op_threads": 2}]
)
def test_one_session_where_runs_cannot_share_cores(
    lite0_onnx: Path, overrides: dict[str, int]
) -> None:
    """One thread per run already, or never two runs at once: no second copy of the graph."""
    assert ModelSession.load(settings_for(lite0_onnx, **overrides))._overlapping is None
