"""Reading a weights file into a plain state dict: file types, training-checkpoint
containers and the prefixes wrappers add to every key.

`torch.load` runs with `weights_only=True`: a weights file must never be able to run code,
so a whole pickled model is refused with a line saying how to save its state dict instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# Where training code nests the weights, in the order taken. timm's own loader prefers the
# EMA weights (they are the ones it evaluates and publishes), so they come first.
CONTAINERS = ("state_dict_ema", "state_dict", "model_state_dict", "model")
# DataParallel/DDP wrap the network as `module`, Lightning modules hold it as `model`.
PREFIXES = ("module.", "model.")
MAX_LISTED = 5


class CheckpointError(ValueError):
    """The file is not a readable state dict; the message says what to do."""


@dataclass(frozen=True)
class Checkpoint:
    state: dict[str, torch.Tensor]
    container: str | None  # the key the state dict was found under, None for a bare one
    prefixes: tuple[str, ...]  # the prefixes removed from every key


def read_checkpoint(path: Path) -> Checkpoint:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix not in FILE_SUFFIXES:
        raise CheckpointError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}"
        )
    obj = _load(path)
    obj, container = _unwrap(obj)
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path}: expected a state dict (name → tensor), got {type(obj).__name__}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: non-tensor entries, e.g. {bad[:MAX_LISTED]}")
    state, prefixes = strip_prefixes({str(k): v for k, v in obj.items()})
    return Checkpoint(state, container, prefixes)


def _load(path: Path) -> object:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _is_pickled_object(exc):
            raise CheckpointError(
                f"{path} holds a whole pickled model, which is never unpickled here (it could "
                "run code): save its weights instead with "
                "torch.save(model.state_dict(), 'weights.pth') and pass that file"
            ) from None
        raise CheckpointError(f"{path}: cannot read weights ({_first_line(exc)})") from None
    except Exception as exc:  # any other parse failure is the same problem for the user
        raise CheckpointError(
            f"{path}: cannot read weights ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _is_pickled_object(exc: pickle.UnpicklingError) -> bool:
    # weights_only refuses the classes a pickled nn.Module needs ("Unsupported global").
    text = str(exc)
    return "Weights only load failed" in text and "global" in text.lower()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _unwrap(obj: object) -> tuple[object, str | None]:
    if not isinstance(obj, Mapping):
        return obj, None
    for key in CONTAINERS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner:
            return inner, key
    return obj, None


def strip_prefixes(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple]:
    """Remove each wrapper prefix that every key carries (`model.module.` is both)."""
    removed: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                removed.append(prefix)
                changed = True
    return state, tuple(removed)
