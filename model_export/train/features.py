"""The frozen backbone's pooled features, computed once per image and cached on disk.

With the backbone frozen, an image's pooled feature vector (what the classifier reads) never
changes, so the expensive part of training runs once: images are decoded by a thread pool
(Pillow releases the GIL while it decodes and resizes) while the network runs batches on every
core through torch's intra-op threads, or on CUDA when there is one. A second run on the same
files with the same weights and preprocessing reads the cache instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model_contract import Preprocessing
from model_export.model import EfficientNet, Preprocessed
from model_export.train.data import Sample, Skipped, read_pixels

BATCH_SIZE = 32
CACHE_VERSION = 1  # bump when what is cached (or how it is computed) changes


class Backbone(nn.Module):
    """The network up to its classifier: the features the new head is trained on."""

    def __init__(self, model: EfficientNet):
        super().__init__()
        self.features = model.features
        self.avgpool = model.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)


@dataclass(frozen=True)
class Features:
    """Pooled features of the images that decoded, with their labels, and those that did not."""

    vectors: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N]
    paths: tuple[Path, ...]  # the N images, in order
    skipped: tuple[Skipped, ...]
    seconds: float  # decoding + the forward passes (0 when read from the cache)
    cached: bool


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def extract(
    model: EfficientNet,
    pre: Preprocessing,
    samples: Sequence[Sample],
    device: torch.device,
    *,
    what: str,
    batch_size: int = BATCH_SIZE,
) -> Features:
    """Decode every sample with the service's rules and run the frozen backbone on it."""
    net = Preprocessed(Backbone(model), pre.mean, pre.std).eval().to(device)
    vectors: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[Path] = []
    skipped: list[Skipped] = []
    start = time.perf_counter()
    bar = tqdm(total=len(samples), desc=what, unit="img", dynamic_ncols=True)
    with bar, torch.inference_mode():
        for batch in _decoded_batches(samples, pre, batch_size):
            kept = [(s, px) for s, px in batch if not isinstance(px, Skipped)]
            skipped += [px for _, px in batch if isinstance(px, Skipped)]
            if kept:
                pixels = torch.from_numpy(np.stack([px for _, px in kept])).to(device)
                vectors.append(net(pixels).float().cpu().numpy())
                labels += [s.label for s, _ in kept]
                paths += [s.path for s, _ in kept]
            bar.update(len(batch))
    width = model.classifier[1].in_features
    return Features(
        vectors=np.concatenate(vectors) if vectors else np.zeros((0, width), np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        paths=tuple(paths),
        skipped=tuple(skipped),
        seconds=time.perf_counter() - start,
        cached=False,
    )


def _decoded_batches(
    samples: Sequence[Sample], pre: Preprocessing, batch_size: int
) -> Iterator[list[tuple[Sample, np.ndarray | Skipped]]]:
    """Batches of decoded samples; the next batch decodes while the network runs this one
    (one batch ahead only, so a large folder never sits in memory as pixels)."""
    chunks = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        ahead = [pool.submit(read_pixels, s, pre) for s in chunks[0]] if chunks else []
        for index, chunk in enumerate(chunks):
            current = ahead
            if index + 1 < len(chunks):
                ahead = [pool.submit(read_pixels, s, pre) for s in chunks[index + 1]]
            yield [(s, f.result()) for s, f in zip(chunk, current, strict=True)]


def cache_key(weights_id: str, pre: Preprocessing, samples: Sequence[Sample]) -> str:
    """Changes with the weights, the preprocessing, or any file's name, label, size or mtime."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{weights_id}|{pre.model_dump_json()}".encode())
    for s in samples:
        stat = s.path.stat()
        digest.update(f"|{s.path.resolve()}|{s.label}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def cached_extract(
    cache_dir: Path,
    key: str,
    model: EfficientNet,
    pre: Preprocessing,
    samples: Sequence[Sample],
    device: torch.device,
    *,
    what: str,
) -> Features:
    """`extract`, or what an earlier run with the same key computed."""
    path = cache_dir / f"features-{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            meta = json.loads(str(saved["meta"]))
            return Features(
                vectors=saved["vectors"],
                labels=saved["labels"],
                paths=tuple(Path(p) for p in meta["paths"]),
                skipped=tuple(Skipped(Path(p), r) for p, r in meta["skipped"]),
                seconds=0.0,
                cached=True,
            )
    found = extract(model, pre, samples, device, what=what)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "paths": [str(p) for p in found.paths],
        "skipped": [[str(s.path), s.reason] for s in found.skipped],
    }
    partial = path.with_name(path.name + ".part.npz")
    np.savez(partial, vectors=found.vectors, labels=found.labels, meta=json.dumps(meta))
    partial.replace(path)  # a reader never sees half a cache file
    return found
