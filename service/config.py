"""Service configuration from ``EFFICIENTNET_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import StartupError

# The service keeps no list of variants (that table is model_export/variants.py): a model file
# says which it holds, and EFFICIENTNET_VARIANT only picks a file in EFFICIENTNET_MODEL_DIR or
# cross-checks the one EFFICIENTNET_MODEL_PATH names.
VARIANT_PATTERN = r"^[a-z0-9_]+$"
DEFAULT_VARIANT = "lite0"
Device = Literal["auto", "cuda", "cpu"]
ENV_PREFIX = "EFFICIENTNET_"
MiB = 1024 * 1024

# Batching defaults per provider: (max batch size, max delay ms, runs in flight), measured
# (BENCHMARKS.md). On the 2-core CPU onnxruntime gains nothing from batches past 2-4 (batch 8:
# 0.85-0.88x batch 1) while the arena keeps the largest batch's activations (peak RSS 653 MB at 8,
# 500 MB at 2), and two runs in flight on the same session beat one (1.13-1.41x): a batch-1 b0
# run leaves gaps between its many small operators that a second run fills. Delay 0: a lone
# request runs at once. GPUs gain far more from batching, afford a short wait, and run one
# batch at a time (one stream).
CPU_BATCHING = (2, 0.0)
GPU_BATCHING = (32, 2.0)
CPU_INFERENCE_WORKERS = 2
GPU_INFERENCE_WORKERS = 1
# The default decode memory budget per pixel of the pixel limit: the costliest image the
# service takes (a progressive 4:4:4 JPEG: 6 bytes of coefficients a pixel; an RGBA image with
# an EXIF rotation: 2 × 4 bytes) fits alone.
DECODE_BYTES_PER_PIXEL = 8
# The default for the upload bodies held in memory at once: far more than the pipeline works on
# (32 phone photos of 2 MB, ~900 web photos of 70 kB), and never under the largest upload.
UPLOAD_MEMORY = 64 * MiB


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int
    max_delay_ms: float
    workers: int  # batches run at once on the one session


class Settings(BaseSettings):
    """All knobs; each field is the env var ``EFFICIENTNET_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # None: read from the file given by model_path, else DEFAULT_VARIANT (see expected_variant).
    variant: str | None = Field(default=None, pattern=VARIANT_PATTERN)
    model_dir: Path = Path("models")
    model_path: Path | None = None
    device: Device = "auto"

    # None = the provider's measured default (see CPU_BATCHING / GPU_BATCHING).
    max_batch_size: int | None = Field(default=None, ge=1, le=1024)
    max_batch_delay_ms: float | None = Field(default=None, ge=0, le=1000)
    max_queue: int = Field(default=256, ge=1, le=100_000)
    max_batch_files: int = Field(default=32, ge=1, le=1024)
    # None = per provider (CPU_INFERENCE_WORKERS / GPU_INFERENCE_WORKERS).
    inference_workers: int | None = Field(default=None, ge=1, le=64)

    max_upload_bytes: int = Field(default=20 * MiB, ge=1)
    # The bodies of the requests being read or served, together (pipeline/admission.py): a request
    # reserves its Content-Length (the upload limit when it has none) before its body is read,
    # and waits, reading nothing, until that fits. None: UPLOAD_MEMORY, or max_upload_bytes if
    # that is more.
    upload_memory_mb: int | None = Field(default=None, ge=1, le=1_000_000)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    request_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # After SIGTERM: this long not ready (/readyz 503) while still serving, so a load balancer
    # that polls /readyz stops sending before the port closes; then the graceful drain.
    drain_delay_s: float = Field(default=0.0, ge=0, le=600)
    # Open connections + requests in progress (python -m service only; uvicorn's
    # limit_concurrency): past it new requests get a plain 503 from uvicorn itself.
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    # The protocol edge (python -m service only; service/edge/): request line + headers
    # (431 past either), and the lingering close after an early answer (413 before the body).
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=16 * MiB)
    max_header_count: int = Field(default=100, ge=8, le=10_000)
    # Requests one connection may make before the server closes it (nginx's keepalive_requests,
    # same default): bounds what one connection's pipelined flood costs the event loop.
    max_requests_per_connection: int = Field(default=1000, ge=1, le=1_000_000)
    linger_s: float = Field(default=10.0, ge=0, le=600)
    linger_bytes: int = Field(default=64 * MiB, ge=0)
    # Slow bodies (Kestrel's MinRequestBodyDataRate): after the grace period a body must have
    # come at this average rate (bytes/s) or the request gets 408. 0 disables the check.
    min_body_rate: float = Field(default=240.0, ge=0)
    body_rate_grace_s: float = Field(default=5.0, ge=0, le=3600)

    # Decoding (pipeline/decode/workers.py): a worker process per preprocessing thread, each decode
    # killed past decode_timeout_s (a 50 MP PNG takes ~4 s on the 2-core CI machine); all
    # decodes at once hold at most decode_memory_mb, as estimated from their headers (None: 8
    # bytes per pixel of max_image_pixels, 381 MiB at 50 MP: any one image under the pixel
    # limit fits, two of the largest wait for each other).
    decode_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    decode_memory_mb: int | None = Field(default=None, ge=16, le=1_000_000)

    api_key: SecretStr | None = None

    # None = derived from the core count (see thread_counts()).
    preprocess_threads: int | None = Field(default=None, ge=1, le=256)
    intra_op_threads: int | None = Field(default=None, ge=1, le=256)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("api_key", "model_path", "variant", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `EFFICIENTNET_API_KEY=` in a compose file means "no key", not "the empty key".
        return None if value == "" else value

    @property
    def expected_variant(self) -> str | None:
        """The variant the model file must hold; None: whatever the file named by
        EFFICIENTNET_MODEL_PATH holds (EFFICIENTNET_VARIANT is then only a cross-check)."""
        if self.variant is not None:
            return self.variant
        return None if self.model_path is not None else DEFAULT_VARIANT

    @property
    def resolved_model_path(self) -> Path:
        variant = self.variant or DEFAULT_VARIANT
        return self.model_path or self.model_dir / f"efficientnet_{variant}.onnx"

    @model_validator(mode="after")
    def _one_upload_fits(self) -> Settings:
        if self.upload_memory_bytes < self.max_upload_bytes:
            raise ValueError(
                f"EFFICIENTNET_UPLOAD_MEMORY_MB={self.upload_memory_mb} is under "
                f"EFFICIENTNET_MAX_UPLOAD_BYTES={self.max_upload_bytes}: an upload of the size "
                "allowed could never be read"
            )
        return self

    @property
    def upload_memory_bytes(self) -> int:
        if self.upload_memory_mb is None:
            return max(UPLOAD_MEMORY, self.max_upload_bytes)
        return self.upload_memory_mb * MiB

    @property
    def decode_memory_bytes(self) -> int:
        if self.decode_memory_mb is None:
            return self.max_image_pixels * DECODE_BYTES_PER_PIXEL
        return self.decode_memory_mb * MiB

    def batch_policy(self, provider: str) -> BatchPolicy:
        cpu = provider == "CPUExecutionProvider"
        size, delay = CPU_BATCHING if cpu else GPU_BATCHING
        workers = CPU_INFERENCE_WORKERS if cpu else GPU_INFERENCE_WORKERS
        return BatchPolicy(
            max_batch_size=self.max_batch_size or size,
            max_delay_ms=delay if self.max_batch_delay_ms is None else self.max_batch_delay_ms,
            workers=self.inference_workers or workers,
        )

    def thread_counts(self) -> tuple[int, int]:
        """(preprocessing pool size, onnxruntime intra-op threads).

        Both default to the cores this process may use: inference and decoding take turns on
        them (onnxruntime's threads do not spin: pipeline/session.py), so neither side idles a core.
        Each preprocessing thread has a decode worker *process* (pipeline/decode/workers.py), so
        that default is capped: a pod limited to 2 CPUs on a 64-core node must not fork 64. It
        is at least 2 even on one CPU: expensive decodes may hold every worker but one
        (pipeline/decode/decoder.py), so only with two does a cheap upload always find one.
        """
        cores = usable_cores()
        default = min(max(cores, MIN_DEFAULT_DECODE_WORKERS), MAX_DEFAULT_DECODE_WORKERS)
        preprocess = self.preprocess_threads or default
        return (preprocess, self.intra_op_threads or cores)


# The default's bounds on decode worker processes (~36 MiB resident each once used).
MIN_DEFAULT_DECODE_WORKERS = 2
MAX_DEFAULT_DECODE_WORKERS = 8
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may run on: its affinity mask, lowered by a cgroup v2 CPU quota
    (a container's CPU limit), which os.cpu_count() ignores on Python < 3.13."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    try:
        return max(1, min(cores, -(-int(quota) // int(period))))  # a 1.5-CPU limit: 2 threads
    except (ValueError, ZeroDivisionError):
        return cores


def _describe(error: dict[str, Any]) -> str:
    if not error.get("loc"):  # a rule across settings, whose message names them
        return str(error["msg"]).removeprefix("Value error, ")
    field = str(error["loc"][0])
    name = ENV_PREFIX + field.upper()
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f"={given!r}"
    return f"invalid {name}{shown}: {error['msg']}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value raises StartupError naming the variable and the rule."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise StartupError("; ".join(_describe(e) for e in exc.errors())) from None
