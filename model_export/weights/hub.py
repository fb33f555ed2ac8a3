"""Hugging Face Hub checkpoints: a timm folder (config.json + model.safetensors or
pytorch_model.bin) read into a variant, a preprocessing and labels, and `hf-hub:ORG/REPO`
downloads of those two files into the weights cache.

This is the one place that reads timm's config.json: everything else gets a `HubModel`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_contract import Interpolation, Preprocessing
from model_export.variants import Architecture, get_architecture

HF_PREFIX = "hf-hub:"
CONFIG = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's loader prefers the first
PROBE_TIMEOUT_S = 10


class HubError(ValueError):
    """A Hub folder or download problem the user can fix; the message says how."""


class _PretrainedCfg(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_size: tuple[int, int, int]
    crop_pct: float = Field(0.875, gt=0, le=1.0)
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class _Config(BaseModel):
    """The part of timm's config.json the export needs."""

    model_config = ConfigDict(extra="ignore")

    architecture: str
    num_classes: int = Field(ge=2)
    # timm writes a list, or a {class index: name} dict when indices have gaps.
    label_names: list[str] | dict[int, str] | None = None
    pretrained_cfg: _PretrainedCfg


@dataclass(frozen=True)
class HubModel:
    architecture: Architecture
    weights: Path  # the state-dict file inside the folder
    num_classes: int
    labels: tuple[str, ...] | None
    preprocessing: Preprocessing
    origin: str  # the folder, or hf-hub:ORG/REPO


def is_hub_reference(weights: str) -> bool:
    return weights.startswith(HF_PREFIX) or Path(weights).is_dir()


def read_folder(folder: Path, origin: str | None = None) -> HubModel:
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise HubError(f"{folder}: a Hub folder needs {CONFIG} (timm's model config)")
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if weights is None:
        raise HubError(f"{folder}: no weights file ({' or '.join(WEIGHT_FILES)})")
    try:
        config = _Config.model_validate(json.loads(config_path.read_text("utf-8")))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[:3]
        raise HubError(f"{config_path}: not a timm model config ({' '.join(first)})") from None
    try:
        arch = get_architecture(config.architecture)
    except ValueError:
        raise HubError(
            f"{config_path}: architecture {config.architecture!r} is not an EfficientNet this "
            "exporter builds (timm's efficientnet_*/tf_efficientnet_* b0-b8, l2, lite0-4)"
        ) from None
    if arch.timm_name is None:  # a bare "b0" is not a timm architecture
        raise HubError(f"{config_path}: architecture {config.architecture!r} is not a timm name")
    labels = _labels(config, config_path)
    return HubModel(
        arch,
        weights,
        config.num_classes,
        labels,
        _preprocessing(config.pretrained_cfg, config_path),
        origin or str(folder.resolve()),
    )


def _labels(config: _Config, where: Path) -> tuple[str, ...] | None:
    names = config.label_names
    if not names:
        return None
    if isinstance(names, dict):
        if sorted(names) != list(range(config.num_classes)):
            raise HubError(
                f"{where}: label_names must name every class 0..{config.num_classes - 1}"
            )
        return tuple(names[i] for i in range(config.num_classes))
    return tuple(names)


def _preprocessing(cfg: _PretrainedCfg, where: Path) -> Preprocessing:
    """timm's eval transform for crop_mode 'center': resize the shorter side to
    floor(size / crop_pct), center-crop size × size."""
    _, height, width = cfg.input_size
    if height != width:
        raise HubError(f"{where}: non-square input_size {cfg.input_size} is not supported")
    if cfg.crop_mode != "center":
        raise HubError(f"{where}: crop_mode {cfg.crop_mode!r}; only 'center' is supported")
    if cfg.interpolation not in get_args(Interpolation):
        raise HubError(f"{where}: interpolation {cfg.interpolation!r} is not supported")
    resize = math.floor(height / cfg.crop_pct)
    interpolation: Interpolation = cfg.interpolation  # type: ignore[assignment]
    return Preprocessing(
        resize_size=resize,
        crop_size=height,
        interpolation=interpolation,
        mean=cfg.mean,
        std=cfg.std,
    )


def download(reference: str, cache_dir: Path) -> HubModel:
    """`hf-hub:ORG/REPO` → its config.json and weights in `cache_dir`, downloaded once."""
    repo = reference.removeprefix(HF_PREFIX)
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise HubError(
            f"{reference}: expected hf-hub:ORG/REPO, e.g. hf-hub:timm/tf_efficientnet_b3"
        )
    folder = cache_dir / "hub" / repo.replace("/", "--")
    if (folder / CONFIG).is_file() and any((folder / f).is_file() for f in WEIGHT_FILES):
        return read_folder(folder, origin=reference)  # downloaded before: never again
    try:  # only here: folders and cached downloads work without huggingface_hub installed
        import huggingface_hub as hf
        from huggingface_hub.utils import logging as hf_logging
    except ImportError:
        raise HubError("hf-hub: needs huggingface_hub: pip install huggingface_hub") from None
    hf_logging.set_verbosity_error()  # its retry warnings would bury the one error line
    tried = [CONFIG]
    try:
        # A probe without retries: hf_hub_download retries a refused connection for ~25 s.
        hf.get_hf_file_metadata(hf.hf_hub_url(repo, CONFIG), timeout=PROBE_TIMEOUT_S)
        hf.hf_hub_download(repo, CONFIG, local_dir=folder)
        for name in WEIGHT_FILES:
            tried.append(name)
            try:
                hf.hf_hub_download(repo, name, local_dir=folder)
                break
            except Exception as exc:
                if not _is_missing_file(exc) or name == WEIGHT_FILES[-1]:
                    raise
    except Exception as exc:  # every failure (offline, 404, auth) gets the same advice
        raise HubError(_offline_message(reference, repo, tried[-1], folder, exc)) from None
    return read_folder(folder, origin=reference)


def _is_missing_file(exc: Exception) -> bool:
    return type(exc).__name__ == "EntryNotFoundError"


def _offline_message(reference: str, repo: str, file: str, folder: Path, exc: Exception) -> str:
    from huggingface_hub import constants  # imported by download() before any failure

    endpoint = constants.ENDPOINT.rstrip("/")  # $HF_ENDPOINT, else https://huggingface.co
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return (
        f"cannot download {reference}: fetching {file} from {endpoint}/{repo} failed "
        f"({type(exc).__name__}: {reason}); to work offline, download {CONFIG} and "
        f"{' or '.join(WEIGHT_FILES)} from {endpoint}/{repo} elsewhere, put them in "
        f"{folder} (or any folder) and pass --weights that folder"
    )
