"""Logits to ranked probabilities: pure numpy, shared by /classify and the OIP wire format."""

from __future__ import annotations

import numpy as np

# Classes answered when a request does not say: 5, or every class of a smaller model.
DEFAULT_TOP_K = 5


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of a 1-D array, largest first."""
    k = min(k, probabilities.shape[-1])
    part = np.argpartition(-probabilities, k - 1)[:k]
    return part[np.argsort(-probabilities[part], kind="stable")]
