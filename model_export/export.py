"""Write `efficientnet_<variant>.onnx` per docs/onnx-contract.md and prove it matches PyTorch.

The graph takes uint8 NHWC pixels and does cast → /255 → normalize → NCHW itself, so a
consumer can never normalize wrongly; the metadata carries everything else the service needs.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from torch import nn

from model_export import __version__
from model_export.blocks import SqueezeExcitation
from model_export.flops import count_gmacs
from model_export.labels import imagenet_labels
from model_export.model import EfficientNet, count_params
from model_export.verify import Verification, VerificationError, verify_graph
from model_export.weights import WeightsInfo

OPSET = 17
METADATA_KEY = "efficientnet"
SCHEMA_VERSION = 1


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ExportError(Exception):
    """The written graph failed a check; the file has been removed."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ExportError(
            f"--name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (it names the file and the served model)"
        )
    return name


def default_name(model: EfficientNet) -> str:
    return f"efficientnet_{model.variant.name}"


class Preprocessed(nn.Module):
    """uint8 NHWC RGB → normalized float NCHW → the network (→ float32 logits)."""

    def __init__(
        self,
        model: EfficientNet,
        mean,
        std,
        dtype: torch.dtype = torch.float32,
        output_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.output_dtype = output_dtype
        # (x/255 - mean)/std folded into one multiply-add per pixel.
        scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
        shift = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
        self.register_buffer("scale", scale.to(dtype), persistent=False)
        self.register_buffer("shift", shift.to(dtype), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.dtype) * self.scale + self.shift
        x = x.permute(0, 3, 1, 2)
        return self.model(x).to(self.output_dtype)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    seconds: float
    verification: Verification  # the graph vs the float64 PyTorch forward, on photos
    metadata: dict

    @property
    def max_abs_diff(self) -> float:
        return self.verification.max_abs_diff

    @property
    def top1_agreement(self) -> float:
        return self.verification.top1_agreement


def export(
    model: EfficientNet,
    info: WeightsInfo,
    output_dir: Path,
    *,
    fp16: bool = False,
    opset: int = OPSET,
    name: str | None = None,
    labels: tuple[str, ...] | None = None,
) -> ExportResult:
    """Export, check and verify; on any failure the file is removed and ExportError raised.

    `labels` default to ImageNet's, which only fit a 1000-class classifier."""
    start = time.perf_counter()
    name = check_name(name or default_name(model))
    labels = labels if labels is not None else imagenet_labels()
    classes = model.classifier[1].out_features
    if len(labels) != classes:
        raise ExportError(f"{len(labels)} labels for a classifier of {classes} classes")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}.onnx"
    crop = info.preprocessing.crop_size
    metadata = build_metadata(model, info, fp16=fp16, opset=opset, name=name, labels=labels)
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
        metadata["verification"] = checked.as_metadata()
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
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    # Fold the exporter's leftovers (Identity nodes, padding arithmetic) into constants.
    proto = onnxscript.optimizer.optimize(onnx.load(str(path)))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return proto


def _stamp(proto: onnx.ModelProto, path: Path, metadata: dict, doc: str) -> None:
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.doc_string = doc
    onnx.save(proto, str(path))


def _half_copy(model: EfficientNet) -> EfficientNet:
    """Half precision, except where half overflows: every global average pooling sums a
    whole feature map (past 65504 → inf → NaN on large, bright inputs), so the SE layers
    and the head's pooling + classifier stay fp32 (they are tiny: 1×1 on pooled vectors).
    SqueezeExcitation and EfficientNet.forward cast to their weights' dtype for this."""
    import copy

    half = copy.deepcopy(model).half().eval()
    for m in half.modules():
        if isinstance(m, SqueezeExcitation):
            m.float()
    half.classifier.float()
    return half


def build_metadata(
    model: EfficientNet,
    info: WeightsInfo,
    *,
    fp16: bool,
    opset: int,
    name: str | None = None,
    labels: tuple[str, ...] | None = None,
) -> dict:
    variant = model.variant
    pre = info.preprocessing
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name or default_name(model),
        "variant": variant.name,
        "family": variant.family,
        "resolution": variant.resolution,
        "preprocessing": {
            "resize_size": pre.resize_size,
            "crop_size": pre.crop_size,
            "interpolation": pre.interpolation,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "input_layout": "NHWC",
            "input_dtype": "uint8",
            "normalization_in_graph": True,
        },
        "labels": list(labels if labels is not None else imagenet_labels()),
        "weights": {
            "source": info.source,
            "origin": info.origin,
            "sha256": info.sha256,
            "key_layout": info.key_layout,
            "seed": info.seed,
            "published_top1": info.published_top1,
            "container": info.container,
        },
        "architecture": {
            "width": variant.width,
            "depth": variant.depth,
            "dropout": variant.dropout,
            "params": count_params(model),
            "gflops": round(count_gmacs(variant, pre.crop_size), 3),
            "padding": model.style.padding,
            "bn_eps": model.style.bn_eps,
            "num_classes": model.classifier[1].out_features,
            "timm_name": info.timm_name,
        },
        "precision": "fp16" if fp16 else "fp32",
        "exporter": {
            "name": "model_export",
            "version": __version__,
            "torch": torch.__version__.split("+")[0],
            "opset": opset,
        },
    }


def describe(result: ExportResult) -> str:
    meta = result.metadata
    return json.dumps(
        {
            "path": str(result.path),
            "name": meta["name"],
            "seconds": round(result.seconds, 1),
            "verification": meta["verification"],
            "precision": meta["precision"],
            "preprocessing": {k: meta["preprocessing"][k] for k in ("resize_size", "crop_size")},
        }
    )


__all__ = ["ExportError", "ExportResult", "Preprocessed", "export"]
