"""Prove a written graph computes what the PyTorch network computes, on natural photos.

The truth is a float64 PyTorch forward of the same network. Pixel noise is not used: on
noise, deep networks with trained statistics are ill-conditioned (PyTorch float32 itself
differs from float64 by orders of magnitude there), so a correct graph would be refused.
On photos, the bound is relative to the logit scale: max |Δ| ≤ 1e-4 · max(1, max |logit|).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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


def reference_logits(model: EfficientNet, pre: Preprocessing, images: np.ndarray) -> np.ndarray:
    """The float64 forward of the same network and the same in-graph normalization."""
    from model_export.export import Preprocessed  # the graph's own input stage

    exact = copy.deepcopy(model).double().eval()
    wrapped = Preprocessed(exact, pre.mean, pre.std, torch.float64, torch.float64).eval()
    with torch.inference_mode():
        return wrapped(torch.from_numpy(images)).numpy()


def graph_logits(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
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
