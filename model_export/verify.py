"""Prove a written graph computes what the PyTorch network computes, on natural photos.

The truth is a float64 PyTorch forward of the same network. Pixel noise is not used: on
noise, deep networks with trained statistics are ill-conditioned (PyTorch float32 itself
differs from float64 by orders of magnitude there), so a correct graph would be refused.
On photos, the bound is relative to the logit scale: max |Δ| ≤ 1e-4 · max(1, max |logit|).
"""

from __future__ import annotations

import copy
import types
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from model_export import telemetry
from model_export.model import EfficientNet
from model_export.variants import Preprocessing

# Public-domain / CC0 photos from scikit-image's data folder (see photos/README.md).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "retina")
REL_BOUND = 1e-4
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class VerificationError(Exception):
    """The graph disagrees with the float64 reference."""


@dataclass(frozen=True)
class Verification:
    """What was verified: the `verification` metadata object."""

    reference: str
    inputs: str
    images: int
    max_abs_diff: float
    max_rel_error: float
    top1_agreement: float

    def as_metadata(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"verified against {self.reference} on {self.inputs}: max |Δlogit| "
            f"{self.max_abs_diff:.3g}, max relative error {self.max_rel_error:.3g}, "
            f"top-1 agreement {self.top1_agreement:.1%}"
        )


def photo_paths() -> list[Path]:
    folder = resources.files("model_export").joinpath("photos")
    return [Path(str(folder.joinpath(f"{name}.jpg"))) for name in PHOTOS]


def describe_inputs() -> str:
    return f"{len(PHOTOS)} natural photos (skimage: {', '.join(PHOTOS)})"


def load_photo(path: Path, pre: Preprocessing) -> np.ndarray:
    """uint8 HWC: the weights' own eval transform (resize the shorter side, center-crop),
    as the service applies it."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = pre.resize_size / min(w, h)
    size = (max(pre.crop_size, round(w * scale)), max(pre.crop_size, round(h * scale)))
    image = image.resize(size, _RESAMPLE[pre.interpolation])
    left, top = (size[0] - pre.crop_size) // 2, (size[1] - pre.crop_size) // 2
    box = (left, top, left + pre.crop_size, top + pre.crop_size)
    return np.asarray(image.crop(box), dtype=np.uint8)


def photo_batch(pre: Preprocessing) -> np.ndarray:
    """uint8 NHWC batch of every verification photo at the crop size."""
    return np.stack([load_photo(p, pre) for p in photo_paths()])


def reference_logits(model: nn.Module, pre: Preprocessing, images: np.ndarray) -> np.ndarray:
    """The float64 forward of the same network and the same in-graph normalization, one
    image at a time (B7 at 600 px in float64 needs GBs for a batch)."""
    from model_export.export import Preprocessed  # the graph's own input stage

    exact = float64_copy(model)
    wrapped = Preprocessed(exact, pre.mean, pre.std, torch.float64, torch.float64).eval()
    with torch.inference_mode():
        rows = [wrapped(torch.from_numpy(image[None])).numpy() for image in images]
    return np.concatenate(rows)


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy whose depthwise convolutions are computed as sums of shifted slices.

    PyTorch has no fast float64 depthwise kernel on CPU: it loops over the channels one
    small convolution at a time (~50x slower than float32; hours for B7). The shifted-slice
    sum is the same arithmetic, vectorized, in float64."""
    exact = copy.deepcopy(model).double().eval()
    for m in exact.modules():
        if isinstance(m, nn.Conv2d) and _is_depthwise(m):
            m._conv_forward = types.MethodType(_depthwise_forward, m)  # type: ignore[method-assign]
    return exact


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return (
        conv.groups > 1
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


def _depthwise_forward(
    conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    ph, pw = conv.padding  # type: ignore[misc]
    x = F.pad(x, [pw, pw, ph, ph])
    out_h, out_w = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    out = torch.zeros((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x[..., i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
            out.addcmul_(window, weight[:, 0, i, j].view(1, -1, 1, 1))
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def graph_logits(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    telemetry.disable_events()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": images})
    return got


def compare(expected: np.ndarray, got: np.ndarray, images: int) -> Verification:
    diff = float(np.abs(got.astype(np.float64) - expected).max())
    scale = max(1.0, float(np.abs(expected).max()))
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    return Verification("pytorch-float64", describe_inputs(), images, diff, diff / scale, agreement)


def verify_graph(model: EfficientNet, pre: Preprocessing, path: Path, fp16: bool) -> Verification:
    """Run the file in onnxruntime against the float64 reference; raise on disagreement
    (fp32: beyond the relative bound or any top-1 differs; any precision: non-finite)."""
    images = photo_batch(pre)
    expected = reference_logits(model, pre, images)
    got = graph_logits(path, images)
    if not np.isfinite(got).all():
        raise VerificationError(f"{path.name}: the graph produced non-finite logits on photos")
    result = compare(expected, got, len(images))
    if not fp16 and (result.max_rel_error > REL_BOUND or result.top1_agreement < 1.0):
        raise VerificationError(
            f"{path.name}: onnxruntime disagrees with the float64 PyTorch reference on "
            f"{result.inputs} (max |Δlogit| {result.max_abs_diff:.3g}, relative "
            f"{result.max_rel_error:.3g} > {REL_BOUND}, or top-1 agreement "
            f"{result.top1_agreement:.0%} < 100%)"
        )
    return result
