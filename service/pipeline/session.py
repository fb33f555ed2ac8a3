"""The onnxruntime session: load, validate against the contract, report the provider really used.

On a CPU where the batcher keeps several runs in flight, the graph is opened twice: a run that
starts alone gets every intra-op thread (a lone request's latency), and a run that starts while
another is running gets the second session, with the cores shared between the runs (1 thread
each on 2 cores). Two runs of 2 threads each kept 5-6 threads runnable on 2 cores beside the
decode threads; b0 web uploads at c16 and c64 went 3-13 % faster, lone requests and phone
photos even, for one more copy of the weights and their prepacked form (b0: +55 MB peak RSS;
BENCHMARKS.md, "Overlapping runs share the cores"). EFFICIENTNET_INTRA_OP_THREADS=1 or
EFFICIENTNET_INFERENCE_WORKERS=1 keep one session.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from model_contract import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, ModelMetadata
from model_contract.telemetry import disable_events
from service.config import Settings
from service.errors import StartupError

log = logging.getLogger("service.session")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ModelSession:
    """An onnxruntime session over one exported ``.onnx`` file, and its metadata."""

    def __init__(
        self,
        session: ort.InferenceSession,
        metadata: ModelMetadata,
        sha256: str,
        path: Path,
    ) -> None:
        self._session = session
        # The same graph with fewer intra-op threads, for a run that starts while another is
        # running (module docstring); None where runs never overlap or on a GPU.
        self._overlapping: ort.InferenceSession | None = None
        self._lock = threading.Lock()
        self._running = 0
        self.metadata = metadata
        self.sha256 = sha256
        self.path = path
        self.input_name = INPUT_NAME
        self.output_name = OUTPUT_NAME
        # What onnxruntime really uses: asking for CUDA without its libraries silently gives CPU.
        self.providers: list[str] = list(session.get_providers())
        self.provider: str = self.providers[0]

    @classmethod
    def load(cls, settings: Settings, path: Path | None = None) -> ModelSession:
        """The configured model file, or ``path`` (a swap): a file named explicitly says its
        own variant, which EFFICIENTNET_VARIANT, when set, must match."""
        expected = settings.expected_variant if path is None else settings.variant
        path = path or settings.resolved_model_path
        data = _read_model(path)
        session = _create_session(data, path, settings)
        metadata = _read_metadata(session, path)
        _check_graph(session, metadata, path)
        _check_variant(metadata, expected, path)
        model = cls(session, metadata, hashlib.sha256(data).hexdigest(), path)
        model._check_device(settings.device)
        threads = _overlapping_threads(settings)
        if model.provider == CPU and threads is not None:
            model._overlapping = _create_session(data, path, settings, threads, [CPU])
            log.info("overlapping runs: %d intra-op thread(s) each, in a second session", threads)
        return model

    def _check_device(self, device: str) -> None:
        if device == "cuda" and self.provider != CUDA:
            raise StartupError(
                "EFFICIENTNET_DEVICE=cuda but the CUDA execution provider did not initialize "
                f"(onnxruntime fell back to {self.provider}: no GPU, or CUDA/cuDNN libraries "
                "missing); use EFFICIENTNET_DEVICE=auto or cpu to run on the CPU"
            )
        if device == "auto" and self.provider != CUDA:
            log.warning(
                "!!! EFFICIENTNET_DEVICE=auto: CUDA is not available, running on %s. "
                "Inference will be much slower than on a GPU. !!!",
                self.provider,
            )

    @property
    def classes(self) -> int:
        """The graph's class count (= the labels in the metadata, checked at load)."""
        return len(self.metadata.labels)

    @property
    def crop_size(self) -> int:
        return self.metadata.preprocessing.crop_size

    def run(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC ``[N, crop, crop, 3]`` → float32 logits ``[N, classes]``."""
        with self._lock:
            alone = self._running == 0
            self._running += 1
        session = self._session if alone or self._overlapping is None else self._overlapping
        try:
            return session.run([self.output_name], {self.input_name: batch})[0]
        finally:
            with self._lock:
                self._running -= 1

    def warm_up(self, batch_sizes: Iterable[int] = (1,)) -> None:
        """First runs allocate and pick kernels; do them before /readyz says yes."""
        for session in (self._session, self._overlapping):
            if session is None:
                continue
            for n in sorted(set(batch_sizes)):
                image = np.zeros((n, self.crop_size, self.crop_size, 3), dtype=np.uint8)
                session.run([self.output_name], {self.input_name: image})


def _read_model(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StartupError(
            f"model file not found: {path} (export it with `efficientnet-export`, or set "
            "EFFICIENTNET_MODEL_DIR / EFFICIENTNET_MODEL_PATH)"
        ) from None
    except OSError as exc:
        raise StartupError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def _overlapping_threads(settings: Settings) -> int | None:
    """Intra-op threads for a run that overlaps another on the CPU: the cores shared between
    the runs that may overlap; None when that is no fewer than a lone run's."""
    _, intra_op = settings.thread_counts()
    workers = settings.batch_policy(CPU).workers
    threads = max(1, intra_op // workers)
    return threads if threads < intra_op else None


def _session_options(settings: Settings, intra_op: int | None = None) -> ort.SessionOptions:
    intra_op = intra_op or settings.thread_counts()[1]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op
    options.inter_op_num_threads = 1
    # Spinning threads would burn the cores the preprocessing pool needs between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Our own startup line reports the provider; onnxruntime's multi-line CUDA-load errors
    # would only bury it.
    options.log_severity_level = 3
    return options


def preload_cuda_libraries() -> bool:
    """Load the CUDA/cuDNN libraries of the ``nvidia-*`` pip wheels, so the CUDA provider finds
    them without ``LD_LIBRARY_PATH``. False when this onnxruntime has no ``preload_dlls`` or the
    libraries are not there: the session then falls back to the CPU, and the provider read back
    from it (``_check_device``) says so."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return False
    try:
        preload()
    except Exception as exc:  # missing wheels are the CPU-only case, not an error
        log.debug("onnxruntime.preload_dlls() failed: %s", exc)
        return False
    return True


def _create_session(
    data: bytes,
    path: Path,
    settings: Settings,
    intra_op: int | None = None,
    providers: list[str] | None = None,
) -> ort.InferenceSession:
    providers = providers or ([CPU] if settings.device == "cpu" else [CUDA, CPU])
    previous = 2  # onnxruntime's default logger severity (warning)
    if CUDA in providers:
        preload_cuda_libraries()
        # The CUDA provider logs its load failure through the default logger, before the
        # session's own severity applies; the failure is reported by _check_device instead.
        ort.set_default_logger_severity(4)
    disable_events()
    try:
        return ort.InferenceSession(data, _session_options(settings, intra_op), providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot load ONNX model {path}: {first_line}") from None
    finally:
        ort.set_default_logger_severity(previous)


def _read_metadata(session: ort.InferenceSession, path: Path) -> ModelMetadata:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise StartupError(
            f"{path} has no {METADATA_KEY!r} metadata: not exported by model_export "
            "(see docs/onnx-contract.md)"
        )
    try:
        return ModelMetadata.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise StartupError(f"{path}: {METADATA_KEY!r} metadata is not valid JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StartupError(
            f"{path}: {METADATA_KEY!r} metadata does not match the contract: {where}: "
            f"{first['msg']}"
        ) from None


def _check_variant(metadata: ModelMetadata, expected: str | None, path: Path) -> None:
    """A file named by EFFICIENTNET_MODEL_PATH alone says its own variant; EFFICIENTNET_VARIANT,
    when set, must agree with it (a mismatch is a deployment mistake, not something to guess)."""
    if expected is None or metadata.variant == expected:
        return
    raise StartupError(
        f"{path} holds variant {metadata.variant!r} but EFFICIENTNET_VARIANT is {expected!r}; "
        f"set EFFICIENTNET_VARIANT={metadata.variant} (or leave it unset with "
        f"EFFICIENTNET_MODEL_PATH) or use the {expected} model file"
    )


def _check_graph(session: ort.InferenceSession, metadata: ModelMetadata, path: Path) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    crop = metadata.preprocessing.crop_size
    image = inputs.get(INPUT_NAME)
    if image is None or image.type != "tensor(uint8)" or list(image.shape[1:]) != [crop, crop, 3]:
        found = [(i.name, i.type, i.shape) for i in inputs.values()]
        raise StartupError(
            f"{path}: expected input {INPUT_NAME!r} uint8 [N, {crop}, {crop}, 3], found {found}"
        )
    logits = outputs.get(OUTPUT_NAME)
    if logits is None or logits.type != "tensor(float)":
        found = [(o.name, o.type, o.shape) for o in outputs.values()]
        raise StartupError(f"{path}: expected output {OUTPUT_NAME!r} float32, found {found}")
    width = logits.shape[-1]
    if isinstance(width, int) and width != len(metadata.labels):
        raise StartupError(
            f"{path}: {len(metadata.labels)} labels in the metadata but the graph outputs "
            f"{width} classes"
        )
