"""`--unfreeze N`: the last N stages of the backbone trained together with the head, on
augmented images (random-resized crop, horizontal flip), for more accuracy where there is time
or a GPU. It starts from the head trained on frozen features, so the first epochs refine a
good classifier instead of back-propagating a random head's large errors into the backbone.

BatchNorm layers keep their ImageNet statistics (eval mode): batches of a few dozen images of
a few classes give noisy statistics, and the exported graph uses the running ones anyway.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from model_contract import Preprocessing
from model_contract.pixels import RESAMPLE
from model_export.model import EfficientNet, Preprocessed
from model_export.train.data import Sample, Skipped, read_rgb
from model_export.train.head import Epoch, History, Stopping

LEARNING_RATE = 1e-4  # a tenth of the head's: the pretrained stages move, but not far
WEIGHT_DECAY = 1e-4
BATCH_SIZE = 32
# torchvision's RandomResizedCrop draws from 8-100 % of the area; small datasets of whole
# objects lose the object at 8 %, so the crop keeps at least a third of the image.
CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class Augmenter:
    """The service's pixel rules (EXIF rotation, modes), then a random crop resized to the
    input instead of the center crop."""

    pre: Preprocessing

    def __call__(self, sample: Sample, rng: random.Random) -> np.ndarray | None:
        img = read_rgb(sample.path)
        if isinstance(img, Skipped):
            return None  # it decoded when its features were computed; changed since
        box = random_box(img.width, img.height, rng)
        size = (self.pre.crop_size, self.pre.crop_size)
        out = img.resize(size, RESAMPLE[self.pre.interpolation], box=box)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.uint8)


def random_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (area and aspect drawn, 10 tries, else the whole)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
        w, h = round((target * ratio) ** 0.5), round((target / ratio) ** 0.5)
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    return 0, 0, width, height


def unfreeze(model: EfficientNet, stages: int) -> list[nn.Parameter]:
    """Trainable: the last `stages` modules of `features` (the final 1x1 convolution counts as
    one) and the classifier; everything else frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [*model.features[len(model.features) - stages :], model.classifier]
    params = [p for m in trainable for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _train_mode(model: EfficientNet, stages: int) -> None:
    model.eval()
    for m in [*model.features[len(model.features) - stages :], model.classifier]:
        m.train()  # dropout and stochastic depth
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def finetune(
    model: EfficientNet,
    pre: Preprocessing,
    stages: int,
    train: Sequence[Sample],
    val_pixels: np.ndarray,
    val_labels: np.ndarray,
    stopping: Stopping,
    seed: int,
    device: torch.device,
    start: Epoch,
) -> History:
    """Train in place; the model ends with the weights of its best validation epoch, or as it
    started (the head's kept epoch, `start`, recorded as epoch 0) when no epoch beat it."""
    params = unfreeze(model, stages)
    net = Preprocessed(model, pre.mean, pre.std).to(device)
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    augment = Augmenter(pre)
    rng = random.Random(seed)
    torch.manual_seed(seed)  # dropout and stochastic depth draw from the global generator
    history = History([dataclasses.replace(start, epoch=0)])
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    improved = 0  # the last epoch that raised the validation accuracy
    for epoch in range(1, stopping.max_epochs + 1):
        order = list(train)
        rng.shuffle(order)
        _train_mode(model, stages)
        losses, correct, seen = 0.0, 0, 0
        bar = tqdm(total=len(order), desc=f"fine-tune {epoch}", unit="img", dynamic_ncols=True)
        with bar:
            for start in range(0, len(order), BATCH_SIZE):
                chunk = order[start : start + BATCH_SIZE]
                images = [(augment(s, rng), s.label) for s in chunk]
                kept = [(px, y) for px, y in images if px is not None]
                bar.update(len(chunk))
                if not kept:
                    continue
                x = torch.from_numpy(np.stack([px for px, _ in kept])).to(device)
                y = torch.tensor([label for _, label in kept], device=device)
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses += float(loss) * len(kept)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(kept)
        val_loss, val_accuracy = evaluate(net, val_pixels, val_labels, device)
        point = Epoch(epoch, losses / max(seen, 1), correct / max(seen, 1), val_loss, val_accuracy)
        old = history.best_epoch
        history.epochs.append(point)
        if point.validation_accuracy > old.validation_accuracy:
            improved = epoch
        if stopping.better(point, old):
            history.best = len(history.epochs) - 1
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if epoch - improved >= stopping.patience:
            break
    model.load_state_dict(best)
    model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return history


def evaluate(
    net: nn.Module, pixels: np.ndarray, labels: np.ndarray, device: torch.device
) -> tuple[float, float]:
    """(loss, accuracy) of the network in eval mode on service-preprocessed pixels."""
    net.eval()
    logits = []
    with torch.inference_mode():
        for i in range(0, len(pixels), BATCH_SIZE):
            logits.append(net(torch.from_numpy(pixels[i : i + BATCH_SIZE]).to(device)).cpu())
    out, y = torch.cat(logits), torch.from_numpy(labels)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())
