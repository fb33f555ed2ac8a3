"""The EfficientNet network built from a variant of the table (torchvision-compatible), and
the input stage every exported graph puts in front of it (`Preprocessed`)."""

from __future__ import annotations

import torch
from torch import nn

from model_export.blocks import BlockSpec, ConvBNAct, ConvStyle, MBConv
from model_export.variants import NUM_CLASSES, Variant

# torchvision's stochastic-depth rate, grown linearly over the blocks; training only.
STOCHASTIC_DEPTH = 0.2


class EfficientNet(nn.Module):
    def __init__(self, variant: Variant, style: ConvStyle, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.variant = variant
        self.style = style
        stem = variant.stem_channels()
        layers: list[nn.Module] = [ConvBNAct(3, stem, 3, style, stride=2)]
        specs = block_specs(variant)
        for stage in specs:
            layers.append(nn.Sequential(*(MBConv(spec, style) for spec in stage)))
        last = specs[-1][-1].cout
        layers.append(ConvBNAct(last, variant.head_channels(), 1, style))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(variant.dropout, inplace=True),
            nn.Linear(variant.head_channels(), num_classes),
        )
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # fp16 graphs pool and classify in fp32 (export._half_copy): the pooled sum overflows.
        dtype = self.classifier[1].weight.dtype
        x = self.avgpool(x if x.dtype == dtype else x.to(dtype))
        return self.classifier(torch.flatten(x, 1))


def block_specs(variant: Variant) -> list[list[BlockSpec]]:
    """Every MBConv of the variant, grouped by stage (the stride only on a stage's first)."""
    stages = variant.stages()
    total = sum(s.repeats for s in stages)
    cin = variant.stem_channels()
    out: list[list[BlockSpec]] = []
    index = 0
    for s in stages:
        stage = []
        for r in range(s.repeats):
            drop = STOCHASTIC_DEPTH * index / total
            stride = s.stride if r == 0 else 1
            stage.append(
                BlockSpec(
                    cin, s.out_channels, s.expand_ratio, s.kernel, stride, variant.use_se, drop
                )
            )
            cin = s.out_channels
            index += 1
        out.append(stage)
    return out


def _init_like_torchvision(model: nn.Module) -> None:
    # Same scheme as torchvision so seeded random weights have sane activations.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.out_features**0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def build_model(
    variant: Variant, style: ConvStyle | None = None, num_classes: int = NUM_CLASSES
) -> EfficientNet:
    """The network in eval mode. `style` defaults to torchvision's (symmetric padding, the
    variant's BN eps)."""
    if style is None:
        style = ConvStyle(bn_eps=variant.bn_eps, activation=variant.activation)
    elif style.activation != variant.activation:
        raise ValueError(f"{variant.name} uses {variant.activation}, not {style.activation}")
    return EfficientNet(variant, style, num_classes).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Preprocessed(nn.Module):
    """uint8 NHWC RGB → normalized float NCHW → the network (→ float32 logits).

    The graph's input stage: the export traces it in front of the network, and verification
    runs the same stage in float64 to compute the reference the graph is compared with."""

    def __init__(
        self,
        model: nn.Module,
        mean,
        std,
        dtype: torch.dtype = torch.float32,
        output_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.output_dtype = output_dtype
        # (x/255 - mean)/std folded into one multiply-add per pixel.
        scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
        shift = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
        self.register_buffer("scale", scale.to(dtype), persistent=False)
        self.register_buffer("shift", shift.to(dtype), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.dtype) * self.scale + self.shift
        x = x.permute(0, 3, 1, 2)
        return self.model(x).to(self.output_dtype)
