"""The obvious alternative a user would write: FastAPI + PyTorch eager, one image per request.

Same network and weights as the .onnx under test (rebuilt with model_export's model and
weights code from the file's own metadata), same preprocessing as torchvision's eval
transform (resize the shorter side, center-crop, to tensor, normalize), the same response
shape as the service. Deliberately plain: no batching, no ONNX, no tuning beyond what a
careful user does (eval mode, inference_mode, the model loaded once at start-up).

    python -m benchmarks.baseline_torch_app --model models/efficientnet_b0.onnx --port 8001
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import onnx
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

from benchmarks.torch_model import build_torch_model

INTERPOLATION = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "nearest": transforms.InterpolationMode.NEAREST,
}


def read_metadata(model_path: Path) -> dict[str, Any]:
    model = onnx.load(str(model_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "efficientnet" not in props:
        raise ValueError(f"{model_path} has no 'efficientnet' metadata")
    return json.loads(props["efficientnet"])


def eval_transform(pre: dict[str, Any]) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(
                pre["resize_size"], interpolation=INTERPOLATION[pre["interpolation"]]
            ),
            transforms.CenterCrop(pre["crop_size"]),
            transforms.ToTensor(),
            transforms.Normalize(pre["mean"], pre["std"]),
        ]
    )


def create_app(model_path: Path, top_k: int = 5) -> FastAPI:
    meta = read_metadata(model_path)
    model = build_torch_model(meta)
    transform = eval_transform(meta["preprocessing"])
    labels: list[str] = meta["labels"]
    with torch.inference_mode():  # first call allocates; keep it out of the measurements
        model(
            torch.zeros(
                1, 3, meta["preprocessing"]["crop_size"], meta["preprocessing"]["crop_size"]
            )
        )
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/classify")
    def classify(file: UploadFile) -> dict[str, Any]:
        # A plain `def` route: FastAPI runs it in its thread pool, as its docs advise for
        # blocking work.
        try:
            img = Image.open(io.BytesIO(file.file.read())).convert("RGB")
        except UnidentifiedImageError as exc:
            raise HTTPException(400, "not an image") from exc
        with torch.inference_mode():
            probs = model(transform(img).unsqueeze(0)).softmax(dim=1)[0]
        scores, indices = probs.topk(top_k)
        predictions = [
            {"index": int(i), "label": labels[int(i)], "score": float(s)}
            for s, i in zip(scores, indices, strict=True)
        ]
        return {"variant": meta["variant"], "predictions": predictions}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FastAPI + PyTorch eager baseline")
    parser.add_argument("--model", type=Path, required=True, help="the .onnx under test")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    uvicorn.run(create_app(args.model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
