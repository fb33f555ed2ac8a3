"""The model as the onnxruntime-based peers (Triton, BentoML) serve it: the same .onnx file,
its metadata read back from the file, and the service's own decode + preprocessing function
(`service.pipeline.decode.image.preprocess`, pure Pillow + numpy), so every peer does the same
work per image as the service and the comparison is between the serving frameworks, not the
image code.

Runs inside a peer's virtual environment (onnxruntime, numpy, Pillow, pydantic), with the
checkout on PYTHONPATH; never imports the service's web stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_contract import ModelMetadata
from service.pipeline.decode.image import preprocess
from service.pipeline.ranking import softmax, top_k

# The service's default limit: a peer refuses the same decompression bombs.
MAX_IMAGE_PIXELS = 50_000_000


def session_options(threads: int) -> ort.SessionOptions:
    """The service's CPU session options: the same thread budget, no spinning threads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@dataclass
class OnnxClassifier:
    session: ort.InferenceSession
    metadata: ModelMetadata

    @classmethod
    def load(cls, path: Path, threads: int) -> OnnxClassifier:
        session = ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        raw = session.get_modelmeta().custom_metadata_map["efficientnet"]
        model = cls(session, ModelMetadata.model_validate(json.loads(raw)))
        model.run(np.zeros((1, model.crop, model.crop, 3), dtype=np.uint8))  # warm-up
        return model

    @property
    def crop(self) -> int:
        return self.metadata.preprocessing.crop_size

    def preprocess(self, data: bytes) -> np.ndarray:
        """Encoded image bytes → uint8 HWC input (raises the service's 4xx errors)."""
        return preprocess(data, self.metadata.preprocessing, MAX_IMAGE_PIXELS)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC → float32 logits."""
        return self.session.run(["logits"], {"image": batch})[0]

    def ranked(self, logits: np.ndarray, k: int = 5) -> list[list[tuple[float, int, str]]]:
        """Per row, the k best (probability, index, label), best first."""
        out = []
        for row in softmax(logits):
            best = top_k(row, k)
            out.append([(float(row[i]), int(i), self.metadata.labels[int(i)]) for i in best])
        return out
