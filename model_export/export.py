"""Write `<name>.onnx` (by default `efficientnet_<variant>.onnx`) as model_contract defines it
(docs/onnx-contract.md describes it) and prove it computes what PyTorch computes.

The graph takes uint8 NHWC pixels and does cast → /255 → normalize → NCHW itself, so a
consumer can never normalize wrongly; the metadata carries everything else the service needs.
"""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch

from model_contract import (
    BATCH_AXIS,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    Architecture,
    ExporterInfo,
    ModelMetadata,
    TrainingInfo,
    VerificationInfo,
    default_model_name,
    is_model_name,
)
from model_export import __version__
from model_export.blocks import SqueezeExcitation
from model_export.flops import count_gmacs
from model_export.labels import imagenet_labels
from model_export.model import EfficientNet, Preprocessed, count_params
from model_export.verify import VerificationError, verify_graph
from model_export.weights import LoadedWeights

OPSET = 17


class ExportError(Exception):
    """The written graph failed a check; the file has been removed."""


def check_name(name: str) -> str:
    """`name` when it is a model name the contract allows (MODEL_NAME_PATTERN)."""
    if not is_model_name(name):
        raise ExportError(
            f"--name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (it names the file and the served model)"
        )
    return name


def default_name(model: EfficientNet) -> str:
    return default_model_name(model.variant.name)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    seconds: float
    verification: VerificationInfo  # the graph vs the float64 PyTorch forward, on photos
    metadata: ModelMetadata  # as written into the file, `verification` included

    @property
    def max_abs_diff(self) -> float:
        return self.verification.max_abs_diff

    @property
    def top1_agreement(self) -> float:
        return self.verification.top1_agreement


def export(
    model: EfficientNet,
    info: LoadedWeights,
    output_dir: Path,
    *,
    fp16: bool = False,
    opset: int = OPSET,
    name: str | None = None,
    labels: tuple[str, ...] | None = None,
    training: TrainingInfo | None = None,
) -> ExportResult:
    """Export, check and verify; on any failure the file is removed and ExportError raised.

    `labels` default to ImageNet's, which only fit a 1000-class classifier; `training` is the
    provenance `model_export train` records (None for any other export)."""
    start = time.perf_counter()
    name = check_name(name or default_name(model))
    labels = labels if labels is not None else imagenet_labels()
    classes = model.classifier[1].out_features
    if len(labels) != classes:
        raise ExportError(f"{len(labels)} labels for a classifier of {classes} classes")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}.onnx"
    crop = info.preprocessing.crop_size
    metadata = build_metadata(
        model, info, fp16=fp16, opset=opset, name=name, labels=labels, training=training
    )
    # Written and verified beside the target, then renamed over it: a failed re-export leaves
    # the previous good graph in place, and a reader never sees a half-written file.
    partial = path.with_name(path.name + ".part")
    try:
        proto = _write_graph(graph_network(model, fp16), info, partial, crop, fp16, opset)
        try:
            checked = verify_graph(model, info.preprocessing, partial, fp16)
        except VerificationError as exc:
            raise ExportError(f"{exc}; file removed") from None
        # What was verified travels in the file; the graph itself is unchanged.
        metadata = metadata.model_copy(update={"verification": checked})
        _stamp(proto, partial, metadata, f"EfficientNet-{model.variant.name} ({info.source})")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportResult(path, time.perf_counter() - start, checked, metadata)


def graph_network(model: EfficientNet, fp16: bool) -> EfficientNet:
    """The network the graph is traced from (a seam for the tests that prove a wrong graph
    is refused: verification always compares against `model` itself)."""
    return _half_copy(model) if fp16 else model


def _write_graph(net, info, path: Path, crop: int, fp16: bool, opset: int) -> onnx.ModelProto:
    dtype = torch.float16 if fp16 else torch.float32
    wrapped = Preprocessed(net, info.preprocessing.mean, info.preprocessing.std, dtype).eval()
    dummy = torch.zeros((1, crop, crop, 3), dtype=torch.uint8)
    with warnings.catch_warnings():
        # TF-SAME padding reads H, W as Python ints: correct, since H and W are fixed.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's own internals
        # The exporter's note that it cannot fold Pad's reversed Slice: onnxscript does it.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # The TorchScript exporter: a clean graph in seconds (the dynamo one is much slower).
        torch.onnx.export(
            wrapped,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    # Fold the exporter's leftovers (Identity nodes, padding arithmetic) into constants.
    proto = onnxscript.optimizer.optimize(onnx.load(str(path)))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return proto


def _stamp(proto: onnx.ModelProto, path: Path, metadata: ModelMetadata, doc: str) -> None:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    proto.doc_string = doc
    onnx.save(proto, str(path))


def _half_copy(model: EfficientNet) -> EfficientNet:
    """Half precision, except where half overflows: every global average pooling sums a
    whole feature map (past 65504 → inf → NaN on large, bright inputs), so the SE layers
    and the head's pooling + classifier stay fp32 (they are tiny: 1×1 on pooled vectors).
    SqueezeExcitation and EfficientNet.forward cast to their weights' dtype for this."""
    half = copy.deepcopy(model).half().eval()
    for m in half.modules():
        if isinstance(m, SqueezeExcitation):
            m.float()
    half.classifier.float()
    return half


def build_metadata(
    model: EfficientNet,
    info: LoadedWeights,
    *,
    fp16: bool,
    opset: int,
    name: str | None = None,
    labels: tuple[str, ...] | None = None,
    training: TrainingInfo | None = None,
) -> ModelMetadata:
    """The file's metadata, all but `verification` (added once the graph has passed)."""
    variant = model.variant
    pre = info.preprocessing
    return ModelMetadata(
        name=name or default_name(model),
        variant=variant.name,
        family=variant.family,
        resolution=variant.resolution,
        preprocessing=pre,
        labels=list(labels if labels is not None else imagenet_labels()),
        weights=info.as_metadata(),
        architecture=Architecture(
            width=variant.width,
            depth=variant.depth,
            dropout=variant.dropout,
            params=count_params(model),
            gflops=round(count_gmacs(variant, pre.crop_size), 3),
            padding=model.style.padding,
            bn_eps=model.style.bn_eps,
            num_classes=model.classifier[1].out_features,
            timm_name=info.timm_name,
        ),
        precision="fp16" if fp16 else "fp32",
        exporter=ExporterInfo(
            name="model_export",
            version=__version__,
            torch=torch.__version__.split("+")[0],
            opset=opset,
        ),
        training=training,
    )


def describe(result: ExportResult) -> str:
    meta = result.metadata
    return json.dumps(
        {
            "path": str(result.path),
            "name": meta.name,
            "seconds": round(result.seconds, 1),
            "verification": result.verification.model_dump(mode="json"),
            "precision": meta.precision,
            "preprocessing": {
                "resize_size": meta.preprocessing.resize_size,
                "crop_size": meta.preprocessing.crop_size,
            },
        }
    )


__all__ = ["ExportError", "ExportResult", "export"]
