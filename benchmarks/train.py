"""Training from a folder: how fast the frozen backbone's features are computed, and how long a
folder of labelled images takes to become a served model.

`python -m benchmarks.train` renders 1,000 of scikit-learn's handwritten digits (100 per class,
benchmarks/digits.py) as PNG class folders, runs `python -m model_export train` on them with an
empty feature cache (Lite0 from its ImageNet weights, the defaults), then starts `python -m
service` on the written file and times its first `/classify`. Figures: the command's own
feature-extraction images/s (decode + forward, from its report), the command's wall time, and
folder → served model (the command, then the service ready and answering). Writes
artifacts/bench-train.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.digits import write_digits
from benchmarks.machine import conditions
from benchmarks.procs import ROOT, free_port, python_argv, start_server
from benchmarks.report import fmt

NAME = "digits"


def run(per_class: int, variant: str, work: Path) -> dict[str, Any]:
    data = write_digits(work / "digits", per_class)
    out = work / "models"
    start = time.perf_counter()
    argv = python_argv(
        "-m", "model_export", "train", "--data", str(data), "--variant", variant,
        "--name", NAME, "--output-dir", str(out), "--cache-dir", str(work / "cache"),
    )  # fmt: skip
    done = subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    trained_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"training failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / f"{NAME}-report" / "report.json").read_text())
    port = free_port()
    server = start_server(
        "service",
        python_argv("-m", "service", "--host", "127.0.0.1", "--port", str(port)),
        port,
        {"EFFICIENTNET_MODEL_PATH": str(out / f"{NAME}.onnx"), "EFFICIENTNET_DEVICE": "cpu"},
        work / "service.log",
    )
    try:
        sample = next((data / "7").iterdir())
        response = httpx.post(
            f"{server.base_url}/classify",
            files={"file": (sample.name, sample.read_bytes(), "image/png")},
            timeout=60,
        )
        response.raise_for_status()
        served_s = time.perf_counter() - start
    finally:
        server.stop()
    extract = report["feature_extraction"]
    return {
        "conditions": conditions(),
        "variant": variant,
        "images": extract["images"] + report["skipped"]["count"],
        "feature_extraction_images_per_second": extract["images_per_second"],
        "feature_extraction_s": extract["seconds"],
        "device": extract["device"],
        "threads": extract["threads"],
        "train_command_s": trained_s,
        "train_command_internal_s": report["seconds"],
        "service_ready_s": server.ready_s,
        "folder_to_served_s": served_s,
        "validation_accuracy": report["validation_accuracy"],
        "validation_images": sum(report["validation_images_per_class"].values()),
        "head_epochs": len(report["learning_curve"]["head"]["epochs"]),
    }


def markdown(r: dict[str, Any]) -> str:
    c = r["conditions"]
    rows = [
        "| figure | value |",
        "|---|---:|",
        f"| images (digits, 64x64 PNG, 10 classes) | {r['images']} |",
        f"| feature extraction, images/s (decode + {r['variant']} forward, {r['device']}, "
        f"{r['threads']} threads) | {fmt(r['feature_extraction_images_per_second'])} |",
        f"| feature extraction, s | {fmt(r['feature_extraction_s'])} |",
        "| `python -m model_export train`, wall s (features, head, export, verification, "
        f"report) | {fmt(r['train_command_s'])} |",
        f"| service ready on the file, s | {fmt(r['service_ready_s'], 2)} |",
        "| **folder → served model** (the command, then the first `/classify` answered), s "
        f"| **{fmt(r['folder_to_served_s'])}** |",
        f"| validation accuracy ({r['validation_images']} held-out images) "
        f"| {r['validation_accuracy']:.1%} |",
    ]
    where = f"{c['cpu']}, {c['cores']} cores, load {c['load_average_at_start']}, {c['date']}"
    return "\n".join(rows) + f"\n\nMeasured on {where} (git {c['git']}).\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__)
    p.add_argument("--per-class", type=int, default=100, help="images per digit (100: 1,000)")
    p.add_argument("--variant", default="lite0")
    p.add_argument("--output-dir", type=Path, default=ROOT / "artifacts")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        result = run(args.per_class, args.variant, Path(work))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "bench-train.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.output_dir / "bench-train.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
