"""The ``efficientnet`` metadata JSON of an exported graph (schema version 1), and the graph's
boundary names. docs/onnx-contract.md is its prose description.

Readers accept files from older exporters (fields added since have defaults) and ignore fields
they do not know (a newer exporter's); the exporter writes every field defined here, so a field
added on one side only fails tests/contract.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

METADATA_KEY = "efficientnet"  # the one ``metadata_props`` entry, holding the JSON below
SCHEMA_VERSION = 1
INPUT_NAME = "image"  # uint8 [N, H, W, 3], RGB, resized and center-cropped
OUTPUT_NAME = "logits"  # float32 [N, C]
BATCH_AXIS = "batch"  # the dynamic axis N of both
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a file name and a URL segment
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)

Interpolation = Literal["bicubic", "bilinear", "nearest"]


def default_model_name(variant: str) -> str:
    """What a graph is named (its file, its /v2 model) when the export is given no name."""
    return f"efficientnet_{variant}"


def is_model_name(name: str) -> bool:
    return _MODEL_NAME.match(name) is not None


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Preprocessing(_Part):
    """An evaluation transform: resize the shorter side, center-crop; the graph normalizes."""

    resize_size: int = Field(ge=1, le=4096)
    crop_size: int = Field(ge=1, le=4096)
    interpolation: Interpolation
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_layout: Literal["NHWC"] = "NHWC"
    input_dtype: Literal["uint8"] = "uint8"
    normalization_in_graph: Literal[True] = True

    @model_validator(mode="after")
    def _crop_fits(self) -> Preprocessing:
        if self.crop_size > self.resize_size:
            raise ValueError(
                f"crop_size {self.crop_size} is larger than resize_size {self.resize_size}"
            )
        return self


class WeightsInfo(_Part):
    """Where the weights came from."""

    source: str  # "imagenet" | "file" | "hub" | "random"
    origin: str | None = None
    sha256: str | None = None
    key_layout: str | None = None
    seed: int | None = None
    published_top1: float | None = None
    container: str | None = None  # the checkpoint dict's entry the weights came from, if any


class Architecture(_Part):
    width: float
    depth: float
    dropout: float
    params: int
    gflops: float
    padding: str
    bn_eps: float
    num_classes: int | None = None
    timm_name: str | None = None


class VerificationInfo(_Part):
    """What the exporter proved before writing the file: the graph against a float64 forward."""

    reference: str
    inputs: str
    images: int
    max_abs_diff: float
    max_rel_error: float
    top1_agreement: float
    # PyTorch float32 vs the float64 truth, measured only when the graph is over the bound.
    float32_rel_error: float | None = None


class TrainingInfo(_Part):
    """How a model trained by ``model_export train`` came to be: what it started from, what it
    saw and how well it did on images it never trained on. Absent for any other export."""

    base_weights: WeightsInfo  # the weights training started from (``weights`` is the result)
    images_per_class: dict[str, int]  # training images, by class name
    validation_images_per_class: dict[str, int]
    validation_source: Literal["folder", "split"]  # a separate folder, or a seeded split
    validation_accuracy: float
    unfrozen_stages: int  # 0: only the new classifier was trained
    epochs: int  # epochs run before early stopping (the kept head is the best one)
    seed: int


class ExporterInfo(_Part):
    name: str
    version: str
    torch: str
    opset: int


class ModelMetadata(_Part):
    """The ``efficientnet`` metadata JSON of an exported graph."""

    schema_version: Literal[1] = SCHEMA_VERSION
    # The Open Inference Protocol model name; older files have none (see model_name).
    name: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    # Any name the exporter's variant table has, today's or a future one: readers keep no list.
    variant: str = Field(pattern=r"^[a-z0-9_]+$")
    family: str
    resolution: int
    preprocessing: Preprocessing
    # Index order; as many as the graph's classes (the service checks it against the graph).
    labels: list[str] = Field(min_length=2)
    weights: WeightsInfo
    architecture: Architecture | None = None
    precision: Literal["fp32", "fp16"] = "fp32"
    verification: VerificationInfo | None = None
    exporter: ExporterInfo | None = None
    training: TrainingInfo | None = None

    @property
    def model_name(self) -> str:
        """What the model is served as: the exported name, else ``efficientnet_<variant>``."""
        return self.name or default_model_name(self.variant)

    def to_json(self) -> str:
        """The JSON the exporter writes: every field, in the order defined here."""
        return self.model_dump_json()
