"""Side-by-side experiments on the known levers, each against the service's own
setting in the same run (same process, same photos, interleaved rounds so that a burst of
load from elsewhere on the machine hits every setting alike).

    python -m benchmarks.levers [--variant b0] [--rounds 3] [--seconds 3]

Prints a markdown table per lever: median images/s (or ms) and the ratio to the first row.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.models import DEFAULT_WEIGHTS, ensure_model
from benchmarks.photos import PHONE_SIZE, WEB_SIZE, Photo, make_photo_set
from benchmarks.report import save_table
from model_contract import Preprocessing
from model_contract.pixels import to_model_input
from service.config import load_settings
from service.pipeline.decode.image import DRAFT_HEADROOM, decode_image, preprocess
from service.pipeline.session import ModelSession

MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class OrtConfig:
    """One onnxruntime session setup; the defaults are the service's (pipeline/session.py)."""

    intra: int = 2
    spinning: bool = False
    parallel: bool = False
    level: str = "all"
    arena: bool = True

    def label(self) -> str:
        return (
            f"intra {self.intra}, spin {'on' if self.spinning else 'off'}, "
            f"{'parallel' if self.parallel else 'sequential'}, opt {self.level}, "
            f"arena {'on' if self.arena else 'off'}"
        )


LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def make_session(path: Path, cfg: OrtConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[cfg.level]
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if cfg.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.intra_op_num_threads = cfg.intra
    options.inter_op_num_threads = 2 if cfg.parallel else 1
    options.enable_cpu_mem_arena = cfg.arena
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if cfg.spinning else "0"
    )
    options.add_session_config_entry(
        "session.inter_op.allow_spinning", "1" if cfg.spinning else "0"
    )
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_rate(
    session: ort.InferenceSession, tensors: list[np.ndarray], batch: int, seconds: float
) -> float:
    """images/s of session.run alone on preprocessed tensors."""
    batches = [
        np.stack([tensors[(i + j) % len(tensors)] for j in range(batch)])
        for i in range(len(tensors))
    ]
    session.run(None, {"image": batches[0]})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"image": batches[runs % len(batches)]})
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def pipeline_rate(
    session: ort.InferenceSession,
    photos: list[Photo],
    spec: Preprocessing,
    workers: int,
    seconds: float,
) -> float:
    """images/s of decode+preprocess in a pool of `workers` overlapped with batch-1 inference."""
    done, start = 0, time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(preprocess, photos[i % len(photos)].data, spec, MAX_PIXELS)
            for i in range(workers + 1)
        ]
        i = len(futures)
        while time.perf_counter() - start < seconds:
            image = futures.pop(0).result()
            futures.append(pool.submit(preprocess, photos[i % len(photos)].data, spec, MAX_PIXELS))
            i += 1
            session.run(None, {"image": image[np.newaxis]})
            done += 1
        for f in futures:
            f.result()
    return done / (time.perf_counter() - start)


def parallel_rate(
    session: ort.InferenceSession,
    photos: list[Photo],
    spec: Preprocessing,
    threads: int,
    seconds: float,
) -> float:
    """images/s of `threads` independent loops, each decoding then running its own image:
    parallelism across requests instead of inside one session.run."""
    deadline = time.perf_counter() + seconds

    def loop(offset: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            image = preprocess(photos[(offset + done) % len(photos)].data, spec, MAX_PIXELS)
            session.run(None, {"image": image[np.newaxis]})
            done += 1
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(loop, range(threads)))
    return total / (time.perf_counter() - start)


def _loops_or_pipeline(
    session: ort.InferenceSession,
    photos: list[Photo],
    spec: Preprocessing,
    loops: int,
    seconds: float,
) -> float:
    """`loops` 0 stands for the service's shape: a 2-thread decode pool feeding one
    inference thread."""
    if loops == 0:
        return pipeline_rate(session, photos, spec, 2, seconds)
    return parallel_rate(session, photos, spec, loops, seconds)


def interleaved(candidates: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of `rounds` measurements per candidate, taken round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, measure in candidates.items():
            samples[name].append(measure())
    return {name: statistics.median(values) for name, values in samples.items()}


def table(title: str, unit: str, figures: dict[str, float], higher_is_better: bool = True) -> str:
    first = next(iter(figures.values()))
    lines = [f"#### {title}", "", f"| setting | {unit} | vs first row |", "|---|---:|---:|"]
    for name, value in figures.items():
        ratio = value / first if higher_is_better else first / value
        lines.append(f"| {name} | {value:.1f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def decode_ms(photo: Photo, spec: Preprocessing, headroom: int | None, repeats: int) -> float:
    """decode + resize/crop of one JPEG with draft mode at `headroom` x the resize target
    (None: no draft, a full-size decode)."""
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        img = (
            decode_image(photo.data, MAX_PIXELS, draft_to=None)
            if headroom is None
            else _draft_decode(photo.data, spec, headroom)
        )
        to_model_input(img, spec)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[1:])


def _draft_decode(data: bytes, spec: Preprocessing, headroom: int):
    import io

    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    side = spec.resize_size * headroom
    img.draft("RGB", (side, side))
    img.load()
    return ImageOps.exif_transpose(img).convert("RGB")


def draft_accuracy(out_dir: Path) -> str:
    """What JPEG draft mode costs in fidelity: model input and Lite0's (real weights)
    probabilities from a drafted decode against a full decode, on phone-size photos."""
    path = ensure_model("lite0", "imagenet", Path("artifacts/bench-models"))
    session = ModelSession.load(load_settings(variant="lite0", model_path=path, device="cpu"))
    spec = session.metadata.preprocessing
    names = ("chelsea", "coffee", "astronaut", "rocket", "cat")
    photos = make_photo_set(out_dir / "draft-photos", sizes=(PHONE_SIZE,), names=names)
    lines = [
        "#### JPEG draft headroom: fidelity against a full decode (lite0, 4032x3024 photos)",
        "",
        "| photo | headroom | max abs pixel diff | mean abs pixel diff | top-1 | max prob diff |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for photo in photos:
        full = to_model_input(decode_image(photo.data, MAX_PIXELS), spec)
        reference = _softmax(session.run(full[np.newaxis])[0])
        for headroom in (2, 1):
            pixels = to_model_input(_draft_decode(photo.data, spec, headroom), spec)
            diff = np.abs(pixels.astype(np.int16) - full.astype(np.int16))
            probs = _softmax(session.run(pixels[np.newaxis])[0])
            same = "same" if probs.argmax() == reference.argmax() else "DIFFERENT"
            lines.append(
                f"| {photo.name} | {headroom} | {diff.max()} | {diff.mean():.2f} | {same} "
                f"| {np.abs(probs - reference).max():.4f} |"
            )
    return "\n".join(lines) + "\n"


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def run_levers(variant: str, rounds: int, seconds: float, out_dir: Path) -> str:
    path = ensure_model(
        variant, DEFAULT_WEIGHTS.get(variant, "random"), Path("artifacts/bench-models")
    )
    settings = load_settings(variant=variant, model_path=path, device="cpu")
    spec = ModelSession.load(settings).metadata.preprocessing
    all_photos = make_photo_set(out_dir / "lever-photos")
    photos = [p for p in all_photos if p.size == WEB_SIZE]
    tensors = [preprocess(p.data, spec, MAX_PIXELS) for p in photos]
    sections = []

    base = OrtConfig()
    configs = {
        "service: " + base.label(): base,
        "spinning on": OrtConfig(spinning=True),
        "intra 1": OrtConfig(intra=1),
        "intra 1, spinning on": OrtConfig(intra=1, spinning=True),
        "parallel execution": OrtConfig(parallel=True),
        "opt level basic": OrtConfig(level="basic"),
        "opt level extended": OrtConfig(level="extended"),
        "arena off": OrtConfig(arena=False),
    }
    sessions = {name: make_session(path, cfg) for name, cfg in configs.items()}
    sections.append(
        table(
            f"{variant}: onnxruntime alone, batch 1, preprocessed tensors",
            "images/s",
            interleaved(
                {n: (lambda s=s: ort_rate(s, tensors, 1, seconds)) for n, s in sessions.items()},
                rounds,
            ),
        )
    )
    service_session = sessions["service: " + base.label()]
    spin_session = sessions["spinning on"]
    sections.append(
        table(
            f"{variant}: batch size on CPU (onnxruntime alone, service settings)",
            "images/s",
            interleaved(
                {
                    f"batch {b}": (lambda b=b: ort_rate(service_session, tensors, b, seconds))
                    for b in (1, 2, 4, 8)
                },
                rounds,
            ),
        )
    )
    pipe = {
        "pool 2, intra 2, spin off (service)": (service_session, 2),
        "pool 1, intra 2, spin off": (service_session, 1),
        "pool 2, intra 2, spin on": (spin_session, 2),
        "pool 1, intra 2, spin on": (spin_session, 1),
        "pool 1, intra 1, spin off": (sessions["intra 1"], 1),
        "pool 2, intra 1, spin off": (sessions["intra 1"], 2),
        "pool 1, intra 1, spin on": (sessions["intra 1, spinning on"], 1),
    }
    sections.append(
        table(
            f"{variant}: in-process pipeline (decode pool overlapped with batch-1 inference)",
            "images/s",
            interleaved(
                {
                    n: (lambda s=s, w=w: pipeline_rate(s, photos, spec, w, seconds))
                    for n, (s, w) in pipe.items()
                },
                rounds,
            ),
        )
    )
    parallel = {
        "service shape: pool 2 decoding -> 1 inference thread, intra 2": (service_session, 0),
        "1 loop, intra 2 (sequential pipeline)": (service_session, 1),
        "2 loops, intra 1": (sessions["intra 1"], 2),
        "2 loops, intra 2": (service_session, 2),
        "2 loops, intra 1, spin on": (sessions["intra 1, spinning on"], 2),
        "3 loops, intra 1": (sessions["intra 1"], 3),
    }
    sections.append(
        table(
            f"{variant}: runs in flight: parallel decode+infer loops sharing one session",
            "images/s",
            interleaved(
                {
                    n: (lambda s=s, t=t: _loops_or_pipeline(s, photos, spec, t, seconds))
                    for n, (s, t) in parallel.items()
                },
                rounds,
            ),
        )
    )
    phone = next(p for p in all_photos if p.size == PHONE_SIZE)
    heads = {
        f"draft, headroom {DRAFT_HEADROOM} (service)": DRAFT_HEADROOM,
        "draft, headroom 1": 1,
        "no draft (full decode)": None,
    }
    sections.append(
        table(
            f"decode + preprocess of a {PHONE_SIZE[0]}x{PHONE_SIZE[1]} JPEG ({phone.name})",
            "ms",
            interleaved(
                {n: (lambda h=h: decode_ms(phone, spec, h, 3)) for n, h in heads.items()}, rounds
            ),
            higher_is_better=False,
        )
    )
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts"))
    parser.add_argument(
        "--draft-accuracy", action="store_true", help="only the draft-mode fidelity table"
    )
    args = parser.parse_args(argv)
    if args.draft_accuracy:
        md = draft_accuracy(args.out_dir)
    else:
        md = run_levers(args.variant, args.rounds, args.seconds, args.out_dir)
    save_table(md, args.out_dir, f"levers-{args.variant}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
