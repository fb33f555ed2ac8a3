"""The JSON the service's own routes answer (the model file's metadata is model_contract's)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from model_contract import Preprocessing, TrainingInfo, VerificationInfo, WeightsInfo


class ErrorBody(BaseModel):
    """What was refused and why (service/errors.py's ``error_body`` writes this shape)."""

    code: str = Field(examples=["unsupported_media_type"])
    message: str = Field(examples=["not an image, or a format the service does not decode"])
    request_id: str = Field(
        examples=["4bf92f3577b34da6a3ce929d0e0e4736"],
        description="the answer's X-Request-ID: the caller's when it sent a sane one, else new",
    )


class ErrorResponse(BaseModel):
    error: ErrorBody


class Prediction(BaseModel):
    index: int = Field(ge=0, examples=[281])
    label: str = Field(examples=["tabby"])
    score: float = Field(ge=0, le=1, examples=[0.83], description="softmax probability")


class Timing(BaseModel):
    """Where the time went for one image, in milliseconds."""

    preprocess: float = Field(description="decode + resize + crop, in a decode worker")
    queue_wait: float = Field(description="from entering the batch queue to its batch starting")
    inference: float = Field(description="the session.run of the batch this image rode in")
    total: float
    batch_size: int = Field(ge=1, description="images in that session.run")


class ClassifyResponse(BaseModel):
    variant: str = Field(examples=["lite0"])
    predictions: list[Prediction] = Field(description="sorted by score, descending")
    timing_ms: Timing


class BatchItem(BaseModel):
    """One uploaded file's outcome: exactly one of ``result`` and ``error`` is set."""

    filename: str | None
    result: ClassifyResponse | None = None
    error: ErrorBody | None = None
    status_code: int = Field(description="the HTTP status this file alone would have got")


class BatchResponse(BaseModel):
    variant: str
    results: list[BatchItem] = Field(description="one per uploaded file, in upload order")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    variant: str | None = None
    provider: str | None = None


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_batch_delay_ms: float
    inference_workers: int  # batches run at once
    max_queue: int


class Limits(BaseModel):
    """The request limits in force; counts are integers (JSON ``20971520``, not ``20971520.0``)."""

    max_upload_bytes: int = Field(description="request body limit")
    max_image_pixels: int = Field(description="width × height limit, from the image header")
    request_timeout_s: float
    max_batch_files: int = Field(description="files per /classify/batch request")


class MetadataResponse(BaseModel):
    name: str = Field(
        examples=["efficientnet_lite0"],
        description="the model's name (the Open Inference Protocol's /v2/models/<name>)",
    )
    variant: str
    family: str
    resolution: int = Field(description="the side of the square image the graph takes")
    preprocessing: Preprocessing
    providers: list[str] = Field(description="onnxruntime providers really in use, in order")
    provider: str = Field(description="the provider that runs the model")
    batching: BatchingInfo
    model_sha256: str
    label_count: int = Field(description="the model's class count; top_k is at most this")
    weights: WeightsInfo
    precision: str
    verification: VerificationInfo | None = Field(
        default=None, description="what the exporter checked the graph against (newer files)"
    )
    training: TrainingInfo | None = Field(
        default=None,
        description="for a model trained by `model_export train`: its base weights, images per "
        "class and validation accuracy",
    )
    onnxruntime_version: str
    limits: Limits
