"""Weights with realistic statistics, built in the test (no download).

Trained checkpoints have BatchNorm affine parameters far from (1, 0) and running statistics
measured on photos; freshly initialized networks have neither, and hide the conditioning
problems a real checkpoint shows (the old noise-based export check refused correct B7
graphs only once the statistics were realistic).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model_contract import Preprocessing
from model_export.photos import photo_batch

CLASSIFIER_GAIN = 30.0


def calibration_images(pre: Preprocessing) -> torch.Tensor:
    """The verification photos and their mirror images, normalized, NCHW float32."""
    pixels = photo_batch(pre)
    pixels = np.concatenate([pixels, pixels[:, :, ::-1]])
    x = torch.from_numpy(pixels.copy()).float().div(255)
    x = (x - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    return x.permute(0, 3, 1, 2).contiguous()


def make_realistic(model: nn.Module, pre: Preprocessing, seed: int = 0) -> nn.Module:
    """Perturb every BN's affine parameters, then re-estimate the running statistics on
    photos at the crop size (in place; returns the model in eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # Train mode also runs stochastic depth, which draws from the global generator.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in norms:
            m.weight.uniform_(0.5, 1.5, generator=generator)
            m.bias.normal_(0.0, 0.2, generator=generator)
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one pass sets the statistics outright
        model.train()
        model(calibration_images(pre))
    for m in norms:
        m.momentum = 0.1
    # A trained classifier is confident (logits ~10); a fresh one answers ~0.1 everywhere.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(CLASSIFIER_GAIN)
    return model.eval()
