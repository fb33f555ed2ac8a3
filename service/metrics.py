"""Prometheus metrics, in a registry per app (tests run several apps in one process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double the output and no dashboard uses them.
disable_created_metrics()

# Latencies from sub-millisecond (a cached 404) to the default request timeout.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "efficientnet_requests", "HTTP requests by route and status", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self.request_latency = Histogram(
            "efficientnet_request_duration_seconds", "Total request latency", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "efficientnet_queue_wait_seconds", "Time an image waits for its batch to start",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.preprocess = Histogram(
            "efficientnet_preprocess_seconds", "Decode + resize + crop time per image",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference = Histogram(
            "efficientnet_inference_seconds", "session.run time per batch",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "efficientnet_batch_size", "Images per session.run", buckets=BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "efficientnet_queue_depth", "Images waiting for a batch", registry=r
        )
        self.upload_memory = Gauge(
            "efficientnet_upload_memory_bytes",
            "Bytes reserved by the bodies being read or served (EFFICIENTNET_UPLOAD_MEMORY_MB)",
            registry=r,
        )
        self.errors = Counter(
            "efficientnet_errors", "Refused requests and failed images by error code", ["code"],
            registry=r,
        )  # fmt: skip
        self.model = Info("efficientnet_model", "The loaded model and its provider", registry=r)
        self.ready = Gauge("efficientnet_ready", "1 when the model is loaded and warm", registry=r)

    def set_model(self, *, variant: str, provider: str, sha256: str, ort_version: str) -> None:
        self.model.info(
            {"variant": variant, "provider": provider, "sha256": sha256, "onnxruntime": ort_version}
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
