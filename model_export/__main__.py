"""CLI: `python -m model_export --variant b3 --weights imagenet --output-dir models`.

torch and the export modules are imported inside the functions that need them, so that
`--help` and every usage error answer at once, without loading torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from model_contract import Interpolation
from model_export.usage import USER_ERROR, OneLineParser, refuse
from model_export.variants import VARIANTS, get_architecture

# The paper's compound-scaling coefficients: FLOPs grow by (α·β²·γ²)^φ ≈ 2^φ.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15

__all__ = ["USER_ERROR", "main", "override_preprocessing", "parse_args"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = OneLineParser(
        prog="efficientnet-export",
        description="Export an EfficientNet variant to a verified, self-describing ONNX graph. "
        "`efficientnet-export train --help`: train a classifier on your own photos instead.",
    )
    p.add_argument("--list", action="store_true", help="print the variant table and exit")
    p.add_argument(
        "--variant",
        help=f"{', '.join(VARIANTS)}, or a timm name (efficientnet_b0, tf_efficientnet_b3); "
        "optional when the weights name it (a Hub folder's config.json)",
    )
    p.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet' (published weights), 'random' (seeded), a .pth/.pt/.bin/.safetensors "
        "file, a Hub folder (config.json + model.safetensors), or hf-hub:ORG/REPO",
    )
    p.add_argument(
        "--labels",
        type=Path,
        help="class names, one per line or a JSON list, in index order (required when the "
        "checkpoint does not have ImageNet's 1000 classes)",
    )
    p.add_argument(
        "--name",
        help="the model's name: the file NAME.onnx and the served model (default "
        "efficientnet_<variant>)",
    )
    _preprocessing_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random")
    p.add_argument("--output-dir", type=Path, default=Path("models"))
    p.add_argument("--fp16", action="store_true", help="half-precision graph (for GPUs)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where downloaded weights are kept (default: $EFFICIENTNET_WEIGHTS_CACHE, "
        "else torch's hub checkpoint directory)",
    )
    args = p.parse_args(argv)
    hub = args.weights.startswith("hf-hub:") or Path(args.weights).is_dir()
    if not args.list and args.variant is None and not hub:
        p.error("--variant is required (or --list), unless --weights is a Hub folder or hf-hub:")
    return args


def _preprocessing_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "preprocessing",
        "override what the weights imply (recorded in the metadata, so the service applies it)",
    )
    g.add_argument("--resolution", type=int, help="crop size in pixels (the graph's H = W)")
    size = g.add_mutually_exclusive_group()
    size.add_argument(
        "--crop-pct",
        type=float,
        help="resize the shorter side to "
        "floor(resolution / crop_pct) before the center crop (timm's crop_pct)",
    )
    size.add_argument("--resize", type=int, help="resize the shorter side to this")
    g.add_argument("--interpolation", choices=get_args(Interpolation))
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"))
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"))


def variant_table() -> str:
    """Every variant with counts from the real graph, and FLOPs growth against 2^φ."""
    import torch

    from model_export.flops import count_gmacs
    from model_export.model import build_model, count_params

    b0 = count_gmacs(VARIANTS["b0"])
    rows = [
        f"{'variant':8} {'width':>5} {'depth':>5} {'res':>4} {'params':>12} "
        f"{'GMACs':>7} {'×B0':>6} {'φ_d':>5} {'φ_w':>5} {'φ_r':>5} {'2^φ':>6}"
    ]
    for name, v in VARIANTS.items():
        with torch.device("meta"):
            params = count_params(build_model(v))
        gmacs = count_gmacs(v)
        # The φ each published multiplier implies (depth = α^φ, width = β^φ, res = 224·γ^φ);
        # the paper's claim is FLOPs ≈ (α·β²·γ²)^φ ≈ 2^φ, taken here at their mean.
        phis = [_phi(v.depth, ALPHA), _phi(v.width, BETA), _phi(v.resolution / 224, GAMMA)]
        rows.append(
            f"{name:8} {v.width:5.1f} {v.depth:5.1f} {v.resolution:4d} {params:12,d} "
            f"{gmacs:7.3f} {gmacs / b0:6.2f} {phis[0]:5.2f} {phis[1]:5.2f} {phis[2]:5.2f} "
            f"{2 ** (sum(phis) / 3):6.2f}"
        )
    rows.append(
        "GMACs = billions of multiply-adds per image at the table's resolution (the paper's "
        "'FLOPs'), counted by torch's FlopCounterMode on the real graph (convs + linear).\n"
        f"Compound scaling: depth α^φ, width β^φ, resolution γ^φ with α={ALPHA}, β={BETA}, "
        f"γ={GAMMA}, so FLOPs should grow ≈2^φ. The published multipliers imply different φ "
        "per dimension (φ_d, φ_w, φ_r) and channels/repeats are rounded, so the real family "
        "(×B0) departs from 2^φ (at the mean φ): compare the last two columns."
    )
    return "\n".join(rows)


def _phi(multiplier: float, base: float) -> float:
    return math.log(multiplier) / math.log(base) if multiplier > 1 else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        # Imported here, like torch below: the export's --help and usage errors stay instant.
        from model_export.train.cli import main as train

        return train(argv[1:])
    args = parse_args(argv)
    if args.list:
        print(variant_table())
        return 0

    try:
        result = run(args)
    except UserError as exc:
        return refuse(exc)
    from model_export.export import describe
    from model_export.verify import summary

    print(f"{result.metadata.precision} graph {summary(result.verification)}")
    print(describe(result))
    return 0


class UserError(Exception):
    """Raised by run() for every refusal the CLI reports with exit status 2."""


def run(args: argparse.Namespace):
    import torch

    from model_export.export import ExportError, check_name, export
    from model_export.labels import LabelsError, read_labels, resolve_labels
    from model_export.weights import WeightsError, load_model

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    try:
        arch = None if args.variant is None else get_architecture(args.variant)
        if args.name is not None:
            check_name(args.name)
        given = read_labels(args.labels) if args.labels is not None else None
        model, info = load_model(arch, args.weights, seed=args.seed, cache_dir=args.cache_dir)
        labels = resolve_labels(info.num_classes, given, bundled=info.labels)
        info = override_preprocessing(info, args)
        _say_what_was_taken(info)
        return export(model, info, args.output_dir, fp16=args.fp16, name=args.name, labels=labels)
    except (ValueError, WeightsError, ExportError, LabelsError) as exc:
        raise UserError(str(exc)) from exc


def override_preprocessing(info, args: argparse.Namespace):
    """The weights' transform with the user's stated changes (any that were given)."""
    pre = info.preprocessing
    crop = args.resolution or pre.crop_size
    if args.crop_pct is not None:
        if not 0 < args.crop_pct <= 1:
            raise ValueError(f"--crop-pct {args.crop_pct}: must be in (0, 1]")
        resize = math.floor(crop / args.crop_pct)
    elif args.resize is not None:
        resize = args.resize
    else:  # a new resolution keeps the weights' resize/crop ratio
        resize = round(crop * pre.resize_size / pre.crop_size)
    if not 16 <= crop <= 2048 or resize < crop:
        raise ValueError(f"resize {resize} / crop {crop}: need 16 <= crop <= 2048, resize >= crop")
    if args.std is not None and min(args.std) <= 0:
        raise ValueError(f"--std {args.std}: every value must be positive")
    changed = pre.model_copy(
        update={
            "resize_size": resize,
            "crop_size": crop,
            "interpolation": args.interpolation or pre.interpolation,
            "mean": tuple(args.mean) if args.mean else pre.mean,
            "std": tuple(args.std) if args.std else pre.std,
        }
    )
    if changed == pre:
        return info
    source = f"{info.preprocessing_source}, overridden on the command line"
    return dataclasses.replace(info, preprocessing=changed, preprocessing_source=source)


def _say_what_was_taken(info) -> None:
    pre = info.preprocessing
    container = f"checkpoint entry {info.container!r}" if info.container else "a bare state dict"
    if info.source in ("file", "hub", "imagenet"):
        print(f"weights: {info.key_layout} layout, {container}, {info.num_classes} classes")
    print(
        f"preprocessing ({info.preprocessing_source}): resize {pre.resize_size} -> crop "
        f"{pre.crop_size}, {pre.interpolation}, mean {list(pre.mean)}, std {list(pre.std)}"
    )


if __name__ == "__main__":
    sys.exit(main())
