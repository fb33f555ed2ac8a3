"""`python -m benchmarks --quick` and the GPU check's failure path, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.models import ensure_model
from benchmarks.photos import PHONE_SIZE, WEB_SIZE, make_photo_set
from benchmarks.procs import free_port, start_server
from benchmarks.run import QUICK, run_level, service_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_quick_run_measures_everything_and_writes_the_report(
    bench_models: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["-m", "benchmarks", "--quick", "--variants", "b0", "--levels", "1", "4"]
    done = _run([*args, "--models-dir", str(bench_models), "--out-dir", str(out)], timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (json_path,) = out.glob("bench-*.json")
    report = json.loads(json_path.read_text())
    (result,) = report["results"]
    assert result["variant"] == "b0"
    for key in ("sequential", "pipelined", "ort_batch1", "pipelined_phone"):
        assert result["inprocess"][key]["count"] >= 1
        assert result["inprocess"][key]["throughput"] > 0
    assert set(result["decode_ms"]) == {"640x480", "4032x3024"}
    for server in ("service", "torch"):
        figures = result[server]
        assert figures["ready_s"] > 0
        assert figures["peak_rss_mb"] > 50  # a Python web server with a model, really sampled
        for level in ("1", "4"):
            assert figures["levels"][level]["count"] >= 1, figures["levels"][level]
            assert figures["levels"][level]["errors"] == 0, figures["levels"][level]
        assert set(figures["phone"]) == {"16", "64"}
        for phone in figures["phone"].values():
            assert phone["count"] >= 1 and phone["errors"] == 0, phone
    # Both servers answered with the same response shape and real labels.
    assert set(result["service"]["levels"]["1"]["top1"]) <= {"chelsea_640x480.jpg",
        "coffee_640x480.jpg", "astronaut_640x480.jpg"}  # fmt: skip

    names = {t["name"] for t in report["targets"]}
    assert {
        "service c16 phone / in-process pipeline phone",
        "service c64 phone / in-process pipeline phone",
        "p50 at c1 minus in-process sequential p50",
        "service / torch eager at c1",
        "start to /readyz 200",
        "peak RSS under load",
    } <= names
    md = json_path.with_suffix(".md").read_text()
    assert "#### Targets" in md and ("PASS" in md or "FAIL" in md)
    # The machine's speed was sampled through the run (a quick run lasts well over 2 s).
    assert int(report["conditions"]["python_piece_samples"]) >= 2
    assert f"took {report['conditions']['python_piece_us']} µs" in md
    assert md.count("| b0 |") == len(report["targets"])


def test_load_generator_counts_refused_requests_as_errors(
    bench_models: Path, tmp_path: Path
) -> None:
    """A request the service refuses must never count as throughput."""
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_bytes(b"this is not a JPEG")
    port = free_port()
    model = ensure_model("b0", "random", bench_models)  # the shared export, not a new one
    env = service_env("b0", model, port, {})
    server = start_server("service", [sys.executable, "-m", "service"], port, env,
                          tmp_path / "service.log")  # fmt: skip
    try:
        photo = make_photo_set(tmp_path / "photos", sizes=(WEB_SIZE,), names=("coffee",))[0]
        from benchmarks.photos import Photo

        bad = Photo("notes", WEB_SIZE, not_a_photo, not_a_photo.read_bytes())
        figures = run_level(server, [photo, bad], 2, QUICK)
    finally:
        assert server.stop() == 0
    assert figures["count"] == 2  # QUICK: 4 requests, every other one refused
    assert figures["errors"] == 2
    assert figures["statuses"] == {"200": 2, "415": 2}
    assert "415" in figures["first_error"]


def test_gpu_check_fails_loudly_when_cuda_is_not_really_used(bench_models: Path) -> None:
    """No visible GPU: onnxruntime falls back to the CPU silently; the check must not."""
    args = ["-m", "benchmarks.gpu_check", "--models-dir", str(bench_models), "--skip-service"]
    done = _run(args, timeout=120, env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "FAIL" in done.stderr and "CPUExecutionProvider" in done.stderr
    assert "images/s" not in done.stdout  # no figure may come out of a CPU fallback


def test_gpu_check_dry_run_exercises_the_logic_on_cpu(bench_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    args = ["benchmarks/gpu_check.sh", "--dry-run"]
    done = subprocess.run(
        ["bash", *args, "--models-dir", str(bench_models), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = [line for line in done.stdout.splitlines() if "images/s" in line]
    assert len(figures) == 5  # b0 x (fp32, fp16) x batch (1, 8), and the service
    assert all(line.startswith("[CPU DRY RUN, NOT GPU FIGURES]") for line in figures)
    report = json.loads(out.read_text())
    assert report["mode"] == "CPU DRY RUN, NOT GPU FIGURES"
    assert report["accuracy"]["max_abs_diff"] <= 1e-3
    assert report["accuracy"]["fp16_top1_agreement"] >= 0.99
    assert {row["precision"] for row in report["throughput"]} == {"fp32", "fp16"}
    # The service end to end at concurrency 64, on the CPU here.
    assert report["service_c64"]["count"] >= 64 and report["service_c64"]["errors"] == 0
    assert "[CPU DRY RUN, NOT GPU FIGURES] service b0 end to end" in done.stdout


def test_phone_photos_are_real_camera_sized_jpegs(tmp_path: Path) -> None:
    photos = make_photo_set(tmp_path, names=("chelsea",))
    web, phone = photos
    assert (web.size, phone.size) == (WEB_SIZE, PHONE_SIZE)
    from PIL import Image

    with Image.open(phone.path) as img:
        assert img.format == "JPEG" and img.size == PHONE_SIZE
    assert len(phone.data) > 1_000_000  # a camera frame, not an upscaled flat image
