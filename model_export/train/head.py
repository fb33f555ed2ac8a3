"""A new linear classifier trained on cached pooled features, with early stopping.

The features are standardized for training (each dimension to mean 0, std 1, from the training
set only), which lets one learning rate suit every backbone; the standardization is then folded
into the layer's weights, so the network keeps a plain `Linear` on raw pooled features and the
exported graph needs nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Small-data defaults that converge on every dataset tried (digits, the photos' classes) in
# tens of epochs; weight decay keeps a head on ~1,000-dimensional features from memorizing.
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2
BATCH_SIZE = 64
STD_FLOOR = 0.1  # of the mean std: the least a dimension is divided by


@dataclass(frozen=True)
class Epoch:
    """One point of the learning curve."""

    epoch: int
    train_loss: float
    train_accuracy: float
    validation_loss: float
    validation_accuracy: float


@dataclass
class History:
    epochs: list[Epoch] = field(default_factory=list)
    best: int = 0  # index into epochs of the kept weights

    @property
    def best_epoch(self) -> Epoch:
        return self.epochs[self.best]


@dataclass(frozen=True)
class Stopping:
    """Stop after `patience` epochs without a higher validation accuracy, or at `max_epochs`;
    keep the `better` epoch's weights."""

    max_epochs: int
    patience: int

    def better(self, new: Epoch, old: Epoch | None) -> bool:
        # Accuracy first; among equal accuracies (common on a small validation set), the
        # lower validation loss: the more confident head on the same answers. Only a higher
        # accuracy resets the patience: a loss that keeps creeping down would never stop.
        if old is None:
            return True
        return (new.validation_accuracy, -new.validation_loss) > (
            old.validation_accuracy,
            -old.validation_loss,
        )


def train_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    classes: int,
    stopping: Stopping,
    seed: int,
) -> tuple[nn.Linear, History]:
    """The best linear head on raw features (standardization folded in), and its curve."""
    mean = train_x.mean(0, dtype=np.float64)
    std = train_x.std(0, dtype=np.float64)
    # A dimension (nearly) constant over the training images must not be blown up: an unseen
    # image that differs there would get huge inputs (seen: validation loss 37 for 0.1 train).
    std = np.maximum(std, STD_FLOOR * max(float(std.mean()), 1e-12))
    xt = torch.from_numpy(((train_x - mean) / std).astype(np.float32))
    xv = torch.from_numpy(((val_x - mean) / std).astype(np.float32))
    yt, yv = torch.from_numpy(train_y), torch.from_numpy(val_y)
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(train_x.shape[1], classes)
    with torch.no_grad():  # seeded init, independent of the global RNG
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    optimizer = torch.optim.AdamW(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    history = History()
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    improved = 0  # the last epoch that raised the validation accuracy
    for epoch in range(1, stopping.max_epochs + 1):
        head.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            loss = F.cross_entropy(head(xt[index]), yt[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        point = _evaluate(head, epoch, xt, yt, xv, yv)
        old = history.best_epoch if history.epochs else None
        history.epochs.append(point)
        if old is None or point.validation_accuracy > old.validation_accuracy:
            improved = epoch
        if stopping.better(point, old):
            history.best = len(history.epochs) - 1
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        if epoch - improved >= stopping.patience:
            break
    head.load_state_dict(best_state)
    return fold_standardization(head, mean, std), history


def _evaluate(
    head: nn.Module,
    epoch: int,
    xt: torch.Tensor,
    yt: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
) -> Epoch:
    head.eval()
    with torch.no_grad():
        train_logits, val_logits = head(xt), head(xv)
    return Epoch(
        epoch=epoch,
        train_loss=float(F.cross_entropy(train_logits, yt)),
        train_accuracy=float((train_logits.argmax(1) == yt).float().mean()),
        validation_loss=float(F.cross_entropy(val_logits, yv)),
        validation_accuracy=float((val_logits.argmax(1) == yv).float().mean()),
    )


def fold_standardization(head: nn.Linear, mean: np.ndarray, std: np.ndarray) -> nn.Linear:
    """W((x - m)/s) + b = (W/s)x + (b - (W/s)m): the same head on raw features."""
    weight = head.weight.detach().double() / torch.from_numpy(std)
    bias = head.bias.detach().double() - weight @ torch.from_numpy(mean)
    folded = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        folded.weight.copy_(weight.float())
        folded.bias.copy_(bias.float())
    return folded.eval()
