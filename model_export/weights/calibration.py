"""BatchNorm statistics for random weights, measured on the verification photos, so that a
randomly initialized network is as well-conditioned as a trained one where it is verified."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model_contract import Preprocessing
from model_export.photos import photo_batch

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
