"""The LitServe peer: one `LitAPI` whose setup opens the same .onnx in onnxruntime with the
service's session options, whose decode_request reads the uploaded file and runs the service's
own preprocessing (the same work per image as ours), whose predict runs the session and whose
encode_response answers the service's shape, {"predictions": [{"index", "label", "score"}, ...]}.

    python -m benchmarks.peers.litserve.server --model m.onnx --port 8030 --workers 1

A request is `POST /predict` (LitServe's default path) multipart/form-data with the photo in
the `file` field, as the service's `/classify` takes it. LitServe runs the LitAPI in
`--workers` inference processes (its `workers_per_device`, on the CPU "device"), each with its
share of the intra-op threads, behind as many uvicorn API processes (its default); with
`--max-batch` > 1 its loop hands predict up to that many requests gathered within
`--batch-timeout-ms` (keep it above 0 when batching: at 0 LitServe 0.2.19's loop polls its
queue without blocking, a core busy while idle; unbatched, it blocks on the queue).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

from benchmarks.peers.onnx_model import OnnxClassifier

Ranked = list[tuple[float, int, str]]


class Classifier(ls.LitAPI):
    """Pickled into each spawned inference worker, so it holds only the path until setup."""

    def __init__(self, model: Path, threads: int, max_batch: int, batch_timeout_s: float) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=batch_timeout_s)
        self.model_path = model
        self.threads = threads
        self.model: OnnxClassifier | None = None

    def setup(self, device: str) -> None:
        self.model = OnnxClassifier.load(self.model_path, self.threads)

    # LitServe types its route from these two signatures: `request` and encode_response's
    # return are left unannotated so the route takes a starlette Request (the multipart form)
    # and answers plain JSON, as LitServe's own examples do (`request: Any` made it a
    # required query parameter: HTTP 422).
    def decode_request(self, request, **kwargs: Any) -> np.ndarray:
        assert self.model is not None
        return self.model.preprocess(request["file"].file.read())

    def predict(self, x: np.ndarray, **kwargs: Any) -> list[Ranked] | Ranked:
        # Batching on: LitServe's default batch() np.stack-s the decoded images (N, H, W, 3)
        # and wants one output per image; off: one (H, W, 3) image, one output.
        assert self.model is not None
        rows = self.model.ranked(self.model.run(x if x.ndim == 4 else x[None]))
        return rows if self.max_batch_size > 1 else rows[0]

    def encode_response(self, output: Ranked, **kwargs: Any):
        return {"predictions": [{"index": i, "label": label, "score": p} for p, i, label in output]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the .onnx under test")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT, in all")
    parser.add_argument("--workers", type=int, default=1, help="LitServe workers_per_device")
    parser.add_argument("--max-batch", type=int, default=1, help="1: no batching")
    parser.add_argument("--batch-timeout-ms", type=float, default=0.0)
    args = parser.parse_args(argv)

    # The thread budget split between the worker processes, as the service's is one budget.
    threads = max(1, args.threads // args.workers)
    api = Classifier(args.model, threads, args.max_batch, args.batch_timeout_ms / 1e3)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    # warning: the service's level in the harness (no access line per request);
    # generate_client_file would write client.py into the working directory.
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
