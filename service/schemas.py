"""Pydantic models at the service's edges: the ONNX metadata it reads and the JSON it answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# --- What the .onnx file carries (docs/onnx-contract.md, schema version 1) ---------------------


class PreprocessingSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    resize_size: int = Field(ge=1, le=4096)
    crop_size: int = Field(ge=1, le=4096)
    interpolation: Literal["bicubic", "bilinear", "nearest"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_layout: Literal["NHWC"] = "NHWC"
    input_dtype: Literal["uint8"] = "uint8"
    normalization_in_graph: Literal[True] = True

    @model_validator(mode="after")
    def _crop_fits(self) -> PreprocessingSpec:
        if self.crop_size > self.resize_size:
            raise ValueError(
                f"crop_size {self.crop_size} is larger than resize_size {self.resize_size}"
            )
        return self


class WeightsInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    source: str
    origin: str | None = None
    sha256: str | None = None
    key_layout: str | None = None
    container: str | None = None  # the checkpoint dict's entry the weights came from, if any
    seed: int | None = None
    published_top1: float | None = None


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ModelMetadata(BaseModel):
    """The ``efficientnet`` metadata JSON of an exported graph."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1]
    # Any name the exporter's variant table has, today's or a future one: the service keeps
    # no list of its own.
    variant: str = Field(pattern=r"^[a-z0-9_]+$")
    family: str
    resolution: int
    preprocessing: PreprocessingSpec
    # Index order; as many as the graph's classes (checked against the graph in session.py).
    labels: list[str] = Field(min_length=2)
    weights: WeightsInfo
    # The Open Inference Protocol model name; older files have none (see model_name).
    name: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    architecture: dict[str, Any] = Field(default_factory=dict)
    precision: Literal["fp32", "fp16"] = "fp32"
    verification: dict[str, Any] | None = None
    exporter: dict[str, Any] = Field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """What the model is served as: the exported ``--name``, else ``efficientnet_<variant>``."""
        return self.name or f"efficientnet_{self.variant}"


# --- Responses ---------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(examples=["unsupported_media_type"])
    message: str = Field(examples=["not an image, or a format the service does not decode"])


class ErrorResponse(BaseModel):
    error: ErrorBody


class Prediction(BaseModel):
    index: int = Field(ge=0, examples=[281])
    label: str = Field(examples=["tabby"])
    score: float = Field(ge=0, le=1, examples=[0.83], description="softmax probability")


class Timing(BaseModel):
    """Where the time went for one image, in milliseconds."""

    preprocess: float = Field(description="decode + resize + crop, in the thread pool")
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
    preprocessing: PreprocessingSpec
    providers: list[str] = Field(description="onnxruntime providers really in use, in order")
    provider: str = Field(description="the provider that runs the model")
    batching: BatchingInfo
    model_sha256: str
    label_count: int = Field(description="the model's class count; top_k is at most this")
    weights: WeightsInfo
    precision: str
    verification: dict[str, Any] | None = Field(
        default=None, description="what the exporter checked the graph against (newer files)"
    )
    onnxruntime_version: str
    limits: Limits
