"""GPU check: is CUDA really running, are its answers right, how fast is it.

    benchmarks/gpu_check.sh              # on a machine with an NVIDIA GPU
    benchmarks/gpu_check.sh --dry-run    # the same logic on the CPU provider, tiny sizes

1. The CUDA execution provider is the one onnxruntime really uses (a session asked for CUDA
   silently falls back to CPU when the CUDA/cuDNN libraries do not load): exit 2 otherwise.
2. fp32 logits on the GPU match the CPU's within 1e-3 (TF32 off), and fp16 top-1 agrees with
   fp32 on >= 99% of the test photos (Lite0 with its real ImageNet weights): exit 1 otherwise.
3. images/s for b0, b4, b7 at batch 1, 8, 32, 64, fp32 and fp16, with I/O binding (input and
   output stay on the device), and the service's end-to-end images/s at concurrency 64.

--dry-run swaps CUDA for the CPU provider to exercise the logic; its figures are CPU figures
and are labelled so, never GPU ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import ImageOps

from benchmarks.models import ensure_model
from benchmarks.photos import WEB_SIZE, make_photo_set
from benchmarks.procs import free_port, python_argv, start_server
from model_contract import Preprocessing
from model_contract.pixels import to_model_input

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
FP32_TOLERANCE = 1e-3
FP16_AGREEMENT = 0.99
# Every RGB photo scikit-image ships, each also mirrored and cropped: 40 test images.
TEST_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat")


class CheckFailed(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Mode:
    provider: str
    label: str  # printed next to every figure
    variants: tuple[str, ...]
    batches: tuple[int, ...]
    seconds: float  # per throughput figure
    service_requests: int

    @property
    def on_gpu(self) -> bool:
        return self.provider == CUDA


GPU = Mode(CUDA, "GPU", ("b0", "b4", "b7"), (1, 8, 32, 64), 3.0, 1280)
DRY = Mode(CPU, "CPU DRY RUN, NOT GPU FIGURES", ("b0",), (1, 8), 0.3, 16)


def providers_for(mode: Mode) -> list[str | tuple[str, dict[str, str]]]:
    if not mode.on_gpu:
        return [CPU]
    # TF32 would trade fp32 accuracy for speed: fp32 here means fp32.
    return [(CUDA, {"use_tf32": "0", "device_id": "0"}), CPU]


def open_session(path: Path, mode: Mode) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=providers_for(mode))
    in_use = session.get_providers()[0]
    if in_use != mode.provider:
        raise CheckFailed(
            f"{path.name}: asked for {mode.provider} but onnxruntime runs {in_use} "
            f"(providers in use: {session.get_providers()}); CUDA/cuDNN libraries missing?",
            code=2,
        )
    return session


def check_all_nodes_on_device(path: Path, mode: Mode) -> str:
    """A second session that may not place any node on the CPU: tells whether part of the
    graph silently falls back (reported, not fatal: shape-only nodes may sit on the CPU)."""
    if not mode.on_gpu:
        return "skipped (dry run)"
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        ort.InferenceSession(str(path), options, providers=providers_for(mode))
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"some nodes run on the CPU: {str(exc).splitlines()[0][:200]}"
    return "every node on CUDA"


def test_images(spec: Preprocessing) -> np.ndarray:
    from benchmarks.photos import load_photo

    images = []
    for name in TEST_PHOTOS:
        photo = load_photo(name)
        w, h = photo.size
        for img in (photo, ImageOps.mirror(photo)):
            for box in ((0, 0, w, h), (0, 0, w * 3 // 4, h), (w // 4, 0, w, h), (0, h // 4, w, h)):
                images.append(to_model_input(img.crop(box), spec))
    return np.stack(images)


def run_batches(session: ort.InferenceSession, images: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate(
        [
            session.run(["logits"], {"image": images[i : i + batch]})[0]
            for i in range(0, len(images), batch)
        ]
    )


def check_accuracy(models_dir: Path, mode: Mode) -> dict[str, float]:
    fp32 = ensure_model("lite0", "imagenet", models_dir)
    fp16 = ensure_model("lite0", "imagenet", models_dir, fp16=True)
    meta = json.loads(
        ort.InferenceSession(str(fp32), providers=[CPU])
        .get_modelmeta()
        .custom_metadata_map["efficientnet"]
    )
    images = test_images(Preprocessing.model_validate(meta["preprocessing"]))
    cpu = run_batches(ort.InferenceSession(str(fp32), providers=[CPU]), images)
    dev32 = run_batches(open_session(fp32, mode), images)
    dev16 = run_batches(open_session(fp16, mode), images)
    max_diff = float(np.abs(dev32 - cpu).max())
    agreement = float((dev16.argmax(1) == dev32.argmax(1)).mean())
    print(
        f"[{mode.label}] lite0 fp32 vs CPU: max |logit diff| {max_diff:.2e} "
        f"(limit {FP32_TOLERANCE})"
    )
    print(
        f"[{mode.label}] lite0 fp16 vs fp32 top-1 agreement: {agreement:.1%} "
        f"over {len(images)} images"
    )
    if max_diff > FP32_TOLERANCE:
        raise CheckFailed(f"fp32 logits differ from CPU by {max_diff:.2e} > {FP32_TOLERANCE}")
    if agreement < FP16_AGREEMENT:
        raise CheckFailed(f"fp16 top-1 agrees with fp32 on only {agreement:.1%} < 99%")
    return {"max_abs_diff": max_diff, "fp16_top1_agreement": agreement, "images": len(images)}


def images_per_second(session: ort.InferenceSession, crop: int, batch: int, mode: Mode) -> float:
    """I/O binding: the input is copied to the device once, the output stays there, so the
    figure is the model's and not the PCIe bus's."""
    device = "cuda" if mode.on_gpu else "cpu"
    data = np.random.default_rng(0).integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8)
    binding = session.io_binding()
    binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(data, device, 0))
    binding.bind_output("logits", device)
    for _ in range(3):  # kernel selection and allocation happen on the first runs
        session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < mode.seconds or runs < 3:
        session.run_with_iobinding(binding)  # synchronous: returns when the GPU is done
        runs += 1
    binding.synchronize_outputs()
    elapsed = time.perf_counter() - start
    return runs * batch / elapsed


def throughput_table(models_dir: Path, mode: Mode) -> list[dict[str, object]]:
    rows = []
    for variant in mode.variants:
        for fp16 in (False, True):
            path = ensure_model(variant, "random", models_dir, fp16=fp16)
            session = open_session(path, mode)
            crop = int(session.get_inputs()[0].shape[1])
            for batch in mode.batches:
                ips = images_per_second(session, crop, batch, mode)
                precision = "fp16" if fp16 else "fp32"
                print(
                    f"[{mode.label}] {variant} {precision} batch {batch:>2}: {ips:9.1f} images/s",
                    flush=True,
                )
                rows.append(
                    {
                        "variant": variant,
                        "precision": precision,
                        "batch": batch,
                        "images_per_s": ips,
                    }
                )
            del session
    return rows


def service_end_to_end(models_dir: Path, mode: Mode, log_dir: Path) -> dict[str, object]:
    from benchmarks.run import FULL, QUICK, run_level

    model = ensure_model("b0", "random", models_dir)
    port = free_port()
    env = {
        "EFFICIENTNET_VARIANT": "b0",
        "EFFICIENTNET_MODEL_PATH": str(model),
        "EFFICIENTNET_DEVICE": "cuda" if mode.on_gpu else "cpu",  # cuda: refuses to start on CPU
        "EFFICIENTNET_PORT": str(port),
        "EFFICIENTNET_LOG_LEVEL": "warning",
    }
    try:
        server = start_server(
            "service", python_argv("-m", "service"), port, env, log_dir / "gpu-service.log"
        )
    except RuntimeError as exc:
        # EFFICIENTNET_DEVICE=cuda: the service refuses to start rather than fall back.
        raise CheckFailed(
            f"the service did not start on {mode.provider} (if onnxruntime found CUDA here "
            "but not there, the service process lacks the CUDA/cuDNN libraries on its "
            f"library path): {str(exc)[-1500:]}",
            code=2,
        ) from None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            photos = make_photo_set(Path(tmp), sizes=(WEB_SIZE,))
            base = FULL if mode.on_gpu else QUICK
            counts = dataclasses.replace(base, requests=mode.service_requests)
            level = run_level(server, photos, 64, counts)
    finally:
        server.stop()
    print(
        f"[{mode.label}] service b0 end to end, 640x480 JPEGs, concurrency 64: "
        f"{level.get('throughput', 0):.1f} images/s, p50 {level.get('p50_ms', 0):.0f} ms, "
        f"errors {level.get('errors')}"
    )
    if not level.get("count"):
        raise CheckFailed(f"the service answered no request: {level.get('first_error')}")
    return level


def gpu_name() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (nvidia-smi failed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU check")
    parser.add_argument("--dry-run", action="store_true", help="CPU provider, tiny sizes")
    parser.add_argument("--models-dir", type=Path, default=Path("artifacts/bench-models"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/gpu-check.json"))
    parser.add_argument("--skip-service", action="store_true")
    args = parser.parse_args(argv)
    mode = DRY if args.dry_run else GPU
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if mode.on_gpu and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when they are installed
    report: dict[str, object] = {"mode": mode.label, "device": gpu_name() if mode.on_gpu else "CPU"}
    print(
        f"[{mode.label}] device: {report['device']}; onnxruntime {ort.__version__}, "
        f"available providers {ort.get_available_providers()}"
    )
    try:
        if mode.on_gpu and CUDA not in ort.get_available_providers():
            raise CheckFailed(
                "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)", 2
            )
        probe = ensure_model("b0", "random", args.models_dir)
        open_session(probe, mode)  # exit 2 right away when CUDA falls back to CPU
        report["placement"] = check_all_nodes_on_device(probe, mode)
        print(
            f"[{mode.label}] provider in use: {mode.provider}; "
            f"node placement: {report['placement']}"
        )
        report["accuracy"] = check_accuracy(args.models_dir, mode)
        report["throughput"] = throughput_table(args.models_dir, mode)
        if not args.skip_service:
            report["service_c64"] = service_end_to_end(args.models_dir, mode, args.out.parent)
    except CheckFailed as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return exc.code
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[{mode.label}] all checks passed; figures in {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
