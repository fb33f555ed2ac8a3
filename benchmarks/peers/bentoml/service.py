"""The BentoML peer: one service whose batchable API takes uploaded image files, decodes and
preprocesses them (the service's own function, so the same work per image as ours) and runs
the same .onnx in one onnxruntime session, with BentoML's adaptive batching forming the
batches, as its adaptive-batching guide shows.

    PEER_MODEL=m.onnx bentoml serve benchmarks.peers.bentoml.service:Classifier \
        --host 127.0.0.1 --port 8020

A request is multipart/form-data with the file in the `images` field (one file: BentoML
merges concurrent requests into the list the API receives). The answer has the service's
shape, {"predictions": [{"index", "label", "score"}, ...]}.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np

from benchmarks.peers.onnx_model import OnnxClassifier

THREADS = int(os.environ.get("PEER_THREADS", os.cpu_count() or 1))
MAX_BATCH = int(os.environ.get("PEER_MAX_BATCH", "8"))
MAX_LATENCY_MS = int(os.environ.get("PEER_MAX_LATENCY_MS", "60000"))  # BentoML's default


@bentoml.service(workers=1, traffic={"timeout": 120})
class Classifier:
    def __init__(self) -> None:
        self.model = OnnxClassifier.load(Path(os.environ["PEER_MODEL"]), THREADS)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def classify(self, images: list[Path]) -> list[dict]:
        pixels = np.stack([self.model.preprocess(path.read_bytes()) for path in images])
        return [
            {"predictions": [{"index": i, "label": label, "score": p} for p, i, label in row]}
            for row in self.model.ranked(self.model.run(pixels))
        ]
