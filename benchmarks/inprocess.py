"""The limit: the service's own pipeline in one process, without HTTP.

Uses the service's code (``service.pipeline.decode.image.preprocess``,
``service.pipeline.session.ModelSession``) with the same Settings the HTTP service gets, on the
same photos, so the only difference left against the HTTP figures is the web layer and the
batcher.
"""

from __future__ import annotations

import collections
import statistics
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from benchmarks.photos import Photo
from benchmarks.stats import RunStats, summarize
from model_contract import Preprocessing
from service.config import Settings, load_settings
from service.pipeline.decode.image import preprocess
from service.pipeline.session import ModelSession

ENV_PREFIX = "EFFICIENTNET_"


def settings_from_env(env: dict[str, str]) -> Settings:
    """The Settings the service builds from the same EFFICIENTNET_* variables."""
    fields = {
        k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)
    }
    return load_settings(**fields)


def open_session(env: dict[str, str]) -> tuple[ModelSession, Settings]:
    settings = settings_from_env(env)
    session = ModelSession.load(settings)
    session.warm_up()
    return session, settings


def _timed_loop(step: Callable[[int], None], count: int, max_seconds: float) -> RunStats:
    latencies: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = start + max_seconds
    for i in range(count):
        t0 = time.perf_counter()
        step(i)
        latencies.append(time.perf_counter() - t0)
        if t0 > deadline:
            break
    cpu_s = time.process_time() - cpu_start
    return summarize(latencies, time.perf_counter() - start, cpu_s=cpu_s)


def decode_preprocess_ms(
    photos: list[Photo], spec: Preprocessing, max_pixels: int, repeats: int
) -> dict[str, float]:
    """Median decode + preprocess time per image size (all photos of that size pooled)."""
    by_size: dict[str, list[float]] = collections.defaultdict(list)
    for photo in photos:
        preprocess(photo.data, spec, max_pixels)  # first call pays lazy imports
        for _ in range(repeats):
            t0 = time.perf_counter()
            preprocess(photo.data, spec, max_pixels)
            by_size[f"{photo.size[0]}x{photo.size[1]}"].append((time.perf_counter() - t0) * 1e3)
    return {size: statistics.median(times) for size, times in by_size.items()}


def sequential(
    session: ModelSession,
    photos: list[Photo],
    spec: Preprocessing,
    max_pixels: int,
    count: int,
    max_seconds: float,
) -> RunStats:
    """One image at a time: decode + preprocess, then inference at batch 1. Its p50 is the
    single-image latency the service's c1 latency is held against."""

    def step(i: int) -> None:
        image = preprocess(photos[i % len(photos)].data, spec, max_pixels)
        session.run(image[np.newaxis])

    return _timed_loop(step, count, max_seconds)


def pipelined(
    session: ModelSession,
    photos: list[Photo],
    spec: Preprocessing,
    max_pixels: int,
    workers: int,
    count: int,
    max_seconds: float,
    max_batch: int = 1,
    runs_in_flight: int = 1,
) -> RunStats:
    """Decoding in a pool of `workers` threads overlapped with inference in `runs_in_flight`
    threads on the one session, batching like the service's batcher with no delay: when a run
    slot is free, the next run takes every image that is already decoded, up to `max_batch`.
    Latency runs from submit to logits."""
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = start + max_seconds
    latencies: list[float] = []
    decoding: collections.deque[tuple[float, Future[np.ndarray]]] = collections.deque()
    running: dict[Future[np.ndarray], list[float]] = {}  # run → its images' submit times

    def finish(block: bool) -> None:
        done, _ = wait(running, return_when=FIRST_COMPLETED) if block else (list(running), None)
        now = time.perf_counter()
        for future in done:
            future.result()
            latencies.extend(now - t0 for t0 in running.pop(future))

    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(runs_in_flight) as runner:
        submitted = 0
        while submitted < count or decoding or running:
            while (
                submitted < count
                and len(decoding) < workers + max_batch * runs_in_flight
                and time.perf_counter() < deadline
            ):
                data = photos[submitted % len(photos)].data
                future = pool.submit(preprocess, data, spec, max_pixels)
                decoding.append((time.perf_counter(), future))
                submitted += 1
            if len(running) == runs_in_flight or (running and not decoding):
                finish(block=True)
                continue
            if not decoding:
                break
            batch = [decoding.popleft()]
            batch[0][1].result()
            while decoding and len(batch) < max_batch and decoding[0][1].done():
                batch.append(decoding.popleft())
            images = [future.result() for _, future in batch]
            tensor = images[0][np.newaxis] if len(images) == 1 else np.stack(images)
            running[runner.submit(session.run, tensor)] = [t0 for t0, _ in batch]
        finish(block=False)
    cpu_s = time.process_time() - cpu_start
    return summarize(latencies, time.perf_counter() - start, cpu_s=cpu_s)


def ort_alone(
    session: ModelSession, tensors: list[np.ndarray], batch: int, count: int, max_seconds: float
) -> RunStats:
    """onnxruntime only, on already preprocessed uint8 tensors; throughput in images/s."""
    batches = [
        np.ascontiguousarray(np.stack([tensors[(i + j) % len(tensors)] for j in range(batch)]))
        for i in range(len(tensors))
    ]
    stats = _timed_loop(lambda i: session.run(batches[i % len(batches)]), count, max_seconds)
    # Per-call latency, but images (not calls) per second and CPU per image.
    cpu = None if stats.cpu_ms_per_item is None else stats.cpu_ms_per_item / batch
    return RunStats(
        **{**stats.as_dict(), "throughput": stats.throughput * batch, "cpu_ms_per_item": cpu}
    )


def preprocessed(photos: list[Photo], spec: Preprocessing, max_pixels: int) -> list[np.ndarray]:
    return [preprocess(p.data, spec, max_pixels) for p in photos]


def model_path_for(env: dict[str, str]) -> Path:
    return settings_from_env(env).resolved_model_path
