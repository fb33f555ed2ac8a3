"""Write `efficientnet_<variant>.onnx` per docs/onnx-contract.md and prove it matches PyTorch.

The graph takes uint8 NHWC pixels and does cast → /255 → normalize → NCHW itself, so a
consumer can never normalize wrongly; the metadata carries everything else the service needs.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxscript.optimizer
import torch
from torch import nn

from model_export import __version__, telemetry
from model_export.flops import count_gmacs
from model_export.labels import imagenet_labels
from model_export.model import EfficientNet, count_params
from model_export.weights import WeightsInfo

OPSET = 17
METADATA_KEY = "efficientnet"
SCHEMA_VERSION = 1
MAX_ABS_DIFF = 1e-4
PARITY_BATCH = 4
PARITY_SEED = 1234


class ExportError(Exception):
    """The written graph failed a check; the file has been removed."""


class Preprocessed(nn.Module):
    """uint8 NHWC RGB → normalized float NCHW → the network (→ float32 logits)."""

    def __init__(self, model: EfficientNet, mean, std, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.dtype = dtype
        # (x/255 - mean)/std folded into one multiply-add per pixel.
        scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
        shift = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
        self.register_buffer("scale", scale.to(dtype), persistent=False)
        self.register_buffer("shift", shift.to(dtype), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.dtype) * self.scale + self.shift
        x = x.permute(0, 3, 1, 2)
        return self.model(x).float()


@dataclass(frozen=True)
class ExportResult:
    path: Path
    seconds: float
    max_abs_diff: float
    top1_agreement: float  # fp32 graph vs PyTorch, or fp16 graph vs fp32 PyTorch
    metadata: dict


def export(
    model: EfficientNet,
    info: WeightsInfo,
    output_dir: Path,
    *,
    fp16: bool = False,
    opset: int = OPSET,
) -> ExportResult:
    """Export, check and verify; on any failure the file is removed and ExportError raised."""
    start = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"efficientnet_{model.variant.name}.onnx"
    crop = info.preprocessing.crop_size
    metadata = build_metadata(model, info, fp16=fp16, opset=opset)
    # Written and verified beside the target, then renamed over it: a failed re-export leaves
    # the previous good graph in place, and a reader never sees a half-written file.
    partial = path.with_name(path.name + ".part")
    try:
        _write_graph(model, info, partial, crop, fp16, opset, metadata)
        diff, agreement = verify(model, info, partial, fp16)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportResult(path, time.perf_counter() - start, diff, agreement, metadata)


def _write_graph(model, info, path: Path, crop: int, fp16: bool, opset: int, metadata) -> None:
    dtype = torch.float16 if fp16 else torch.float32
    net = model if not fp16 else _half_copy(model)
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
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.doc_string = f"EfficientNet-{model.variant.name} ({info.source} weights)"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def _half_copy(model: EfficientNet) -> EfficientNet:
    import copy

    return copy.deepcopy(model).half().eval()


def verify(model: EfficientNet, info: WeightsInfo, path: Path, fp16: bool) -> tuple[float, float]:
    """Run the file in onnxruntime against PyTorch (fp32) on a seeded uint8 batch."""
    import onnxruntime as ort

    crop = info.preprocessing.crop_size
    images = parity_images(crop)
    reference = Preprocessed(model, info.preprocessing.mean, info.preprocessing.std).eval()
    with torch.inference_mode():
        expected = reference(torch.from_numpy(images)).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    telemetry.disable_events()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": images})
    if not np.isfinite(got).all():  # fp16 can overflow where fp32 does not
        raise ExportError(f"{path.name}: the graph produced non-finite logits; file removed")
    diff = float(np.abs(got - expected).max())
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    if not fp16 and (diff > MAX_ABS_DIFF or agreement < 1.0):
        raise ExportError(
            f"{path.name}: onnxruntime disagrees with PyTorch (max |Δlogit| {diff:.3g} > "
            f"{MAX_ABS_DIFF} or top-1 agreement {agreement:.0%}); file removed"
        )
    return diff, agreement


def parity_images(size: int) -> np.ndarray:
    """Seeded uint8 NHWC batch: pixel noise plus smooth, photo-like gradients."""
    rng = np.random.default_rng(PARITY_SEED)
    half = PARITY_BATCH // 2
    noise = rng.integers(0, 256, size=(half, size, size, 3), dtype=np.uint8)
    coarse = rng.integers(0, 256, size=(PARITY_BATCH - half, 3, 4, 4)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=True
    )
    smooth_u8 = smooth.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.concatenate([noise, smooth_u8])


def build_metadata(model: EfficientNet, info: WeightsInfo, *, fp16: bool, opset: int) -> dict:
    variant = model.variant
    pre = info.preprocessing
    return {
        "schema_version": SCHEMA_VERSION,
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
        "labels": list(imagenet_labels()),
        "weights": {
            "source": info.source,
            "origin": info.origin,
            "sha256": info.sha256,
            "key_layout": info.key_layout,
            "seed": info.seed,
            "published_top1": info.published_top1,
        },
        "architecture": {
            "width": variant.width,
            "depth": variant.depth,
            "dropout": variant.dropout,
            "params": count_params(model),
            "gflops": round(count_gmacs(variant, pre.crop_size), 3),
            "padding": model.style.padding,
            "bn_eps": model.style.bn_eps,
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
            "seconds": round(result.seconds, 1),
            "max_abs_diff": result.max_abs_diff,
            "top1_agreement": result.top1_agreement,
            "precision": meta["precision"],
            "preprocessing": {k: meta["preprocessing"][k] for k in ("resize_size", "crop_size")},
        }
    )


__all__ = ["ExportError", "ExportResult", "Preprocessed", "export"]
