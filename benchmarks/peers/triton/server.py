"""The Triton peer: one `tritonserver` (PyTriton's) on 127.0.0.1 serving the same .onnx as
two models, each with Triton's dynamic batcher:

- `<model>_jpeg`: BYTES `encoded_image` [N, 1] — JPEG bytes, decoded and preprocessed inside
  the bound Python function (the same work per image as the service);
- `<model>_uint8`: UINT8 `image` [N, crop, crop, 3] — pixels preprocessed by the client, what
  a Triton user often sends (the decode's CPU is then the client's, not the server's).

Both answer a BYTES `labels` output [N, 5] of "score:index:label" strings, as Triton's
classification extension does. Names of inputs and outputs are those of the service's own
Open Inference Protocol endpoint, so one load generator drives both.

Dynamic batcher, as Triton's model-configuration guide advises: enable it with a maximum batch
size and no delay, then raise the delay only while throughput still rises (`--delay-us`).

    python -m benchmarks.peers.triton.server --model m.onnx --http-port 8010 --grpc-port 8011

PyTriton's Python-backend stub links `libpython3.X.so.1.0` by name: with a venv whose Python
is not the system's (here pyenv's 3.11.7 while Debian ships 3.11.2) it picks up the system's
library, whose C `_thread` lacks `RLock._recursion_count` that 3.11.7's `multiprocessing`
calls, and the model fails to load with that AttributeError. Putting this interpreter's own
LIBDIR first on LD_LIBRARY_PATH (inherited by tritonserver and its stubs) makes them match.
"""

from __future__ import annotations

import argparse
import os
import sysconfig
from pathlib import Path

import numpy as np

# Before pytriton starts tritonserver (see the module docstring).
_LIBDIR = sysconfig.get_config_var("LIBDIR") or ""
os.environ["LD_LIBRARY_PATH"] = ":".join(
    p for p in (_LIBDIR, os.environ.get("LD_LIBRARY_PATH", "")) if p
)

from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402

from benchmarks.peers.onnx_model import OnnxClassifier  # noqa: E402

TOP_K = 5


def _labels(model: OnnxClassifier, logits: np.ndarray) -> np.ndarray:
    rows = [[f"{p:.6f}:{i}:{label}".encode() for p, i, label in r] for r in model.ranked(logits)]
    return np.array(rows, dtype=np.object_)


def jpeg_fn(model: OnnxClassifier):
    @batch
    def infer(encoded_image: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.stack([model.preprocess(bytes(row[0])) for row in encoded_image])
        return {"labels": _labels(model, model.run(pixels))}

    return infer


def uint8_fn(model: OnnxClassifier):
    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        return {"labels": _labels(model, model.run(np.ascontiguousarray(image)))}

    return infer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the .onnx under test")
    parser.add_argument("--name", default="efficientnet")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--delay-us", type=int, default=0, help="dynamic batcher queue delay")
    parser.add_argument(
        "--instances",
        type=int,
        default=2,
        help="model instances per model (Triton's "
        "instance_group count): one decodes while another runs",
    )
    args = parser.parse_args(argv)

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_metrics=False,
        log_verbose=0,
    )
    batching = ModelConfig(
        max_batch_size=args.max_batch,
        batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us),
    )
    # One session per instance, each with the whole thread budget (as the service's runs).
    models = [OnnxClassifier.load(args.model, args.threads) for _ in range(args.instances)]
    crop = models[0].crop
    labels = [Tensor(name="labels", dtype=np.bytes_, shape=(TOP_K,))]
    with Triton(config=config) as triton:
        triton.bind(
            model_name=f"{args.name}_jpeg",
            infer_func=[jpeg_fn(m) for m in models],
            inputs=[Tensor(name="encoded_image", dtype=np.bytes_, shape=(1,))],
            outputs=labels,
            config=batching,
            strict=True,
        )
        triton.bind(
            model_name=f"{args.name}_uint8",
            infer_func=[uint8_fn(m) for m in models],
            inputs=[Tensor(name="image", dtype=np.uint8, shape=(crop, crop, 3))],
            outputs=labels,
            config=batching,
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
