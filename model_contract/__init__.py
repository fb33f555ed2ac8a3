"""The contract between the two wings: what an exported ``.onnx`` file carries.

``model_export`` builds and validates the metadata with these models before writing it;
``service`` loads the file with the same models. Pydantic and the standard library only (and
``pixels``, imported on its own: Pillow and numpy): no torch, no onnxruntime, so both wings (and
the torch-free serving image) can import it.
docs/onnx-contract.md describes the same contract in prose.
"""

# First, before anything imports onnxruntime: its telemetry is switched off (telemetry.py).
from . import telemetry as telemetry
from .geometry import crop_box, crop_offsets, resized_size
from .metadata import (
    BATCH_AXIS,
    INPUT_NAME,
    METADATA_KEY,
    MODEL_NAME_PATTERN,
    OUTPUT_NAME,
    SCHEMA_VERSION,
    Architecture,
    ExporterInfo,
    Interpolation,
    ModelMetadata,
    Preprocessing,
    TrainingInfo,
    VerificationInfo,
    WeightsInfo,
    default_model_name,
    is_model_name,
)

__all__ = [
    "BATCH_AXIS",
    "INPUT_NAME",
    "METADATA_KEY",
    "MODEL_NAME_PATTERN",
    "OUTPUT_NAME",
    "SCHEMA_VERSION",
    "Architecture",
    "ExporterInfo",
    "Interpolation",
    "ModelMetadata",
    "Preprocessing",
    "TrainingInfo",
    "VerificationInfo",
    "WeightsInfo",
    "crop_box",
    "crop_offsets",
    "default_model_name",
    "is_model_name",
    "resized_size",
]
