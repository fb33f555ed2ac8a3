"""The peer benchmark: the harness's `--quick` dry run end to end, and the peers' wire
formats checked against Triton's own client library.

What the dry run covers: the whole harness path (photo set, the shared b0 export, the
client-preprocessed uint8 tensors, starting and stopping a real server, the load generator in
every request shape the peers use — multipart, raw body, Open Inference Protocol BYTES and
UINT8 with the binary extension — best-of rounds, top-1 agreement, the ratio table, the
PASS/FAIL targets, the JSON and markdown reports). The peers' request shapes are sent to the
service's own endpoints that accept them (`--stand-ins`), so no peer venv is needed; Triton,
TorchServe, BentoML and LitServe themselves run only in `make bench-peers` (their venvs take
minutes and up to gigabytes to install).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from benchmarks.loadgen import _top1, make_upload
from benchmarks.peers.report import Measured, targets

ROOT = Path(__file__).resolve().parents[2]
WEB = {"chelsea_640x480", "coffee_640x480", "astronaut_640x480"}


@pytest.mark.slow
def test_quick_dry_run_measures_every_request_shape_and_writes_the_report(
    bench_models: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["-m", "benchmarks.peers", "--quick", "--variants", "b0", "--peers", "none"]
    args += ["--levels", "1", "16"]  # the stand-ins are on by default
    args += ["--models-dir", str(bench_models), "--out-dir", str(out)]
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    (json_path,) = out.glob("peers-*.json")
    report = json.loads(json_path.read_text())
    (result,) = report["results"]
    measured = {m["name"]: m for m in result["measured"]}
    assert list(measured) == [
        "service", "service /v2 uint8 tensors", "service /v2 JPEG bytes", "service raw body",
    ]  # fmt: skip
    for m in measured.values():
        loads = {"web c1", "web c16"} | ({"phone c16"} if m["kind"] == "jpeg" else set())
        assert set(m["best"]) == loads, m["name"]
        assert len(m["rounds"]) == 1
        for key, figures in m["best"].items():
            assert figures["count"] >= 1 and figures["errors"] == 0, (m["name"], key, figures)
            assert figures["server_cpu_ms_per_request"] > 0
            assert figures["peak_rss_mb"] > 50  # a Python server with a model, really sampled
        assert m["ready_s"] > 0
    # The same server behind every shape: each must report the same top-1 per photo, which
    # checks the OIP response parsing and that the uint8 files are the service's own input.
    ref = _stems(measured["service"])
    assert set(ref) >= WEB
    for name, m in measured.items():
        got = _stems(m)
        assert set(got) >= WEB, name
        assert {k: ref[k] for k in got} == got, name

    # No peer ran, so no target; the service's own rows are never a peer to beat.
    assert report["targets"] == []
    md = json_path.with_suffix(".md").read_text()
    assert "#### b0 (random weights)" in md and "#### Targets" in md
    assert "top-1 service raw body vs service: 6/6 photos agree" in md
    _check_targets_on(result["measured"])


def _check_targets_on(rows: list[dict]) -> None:
    """The targets on the dry run's real figures, with the raw-body row posing as a peer:
    one throughput target per headline level measured (c16 here), and c1's throughput and p50
    targets, each
    PASS exactly when its figures say so."""
    measured = [Measured(**row) for row in rows]
    for m in measured:
        if m.name == "service raw body":
            m.server = "a peer"
    ours, peer = measured[0], measured[-1]
    checked = {t.name: t for t in targets("b0", measured)}
    speed = checked["service / service raw body images/s at c16"]
    ratio = ours.best["web c16"]["throughput"] / peer.best["web c16"]["throughput"]
    assert speed.value == pytest.approx(ratio) and speed.passed == (ratio > 1)
    (latency,) = [t for n, t in checked.items() if n.startswith("service p50 at c1")]
    bound = 1.1 * peer.best["web c1"]["p50_ms"]
    assert latency.value == pytest.approx(
        ours.best["web c1"]["p50_ms"] / peer.best["web c1"]["p50_ms"]
    )
    assert latency.passed == (ours.best["web c1"]["p50_ms"] <= bound)
    at_c1 = checked["service / service raw body images/s at c1"]
    ratio = ours.best["web c1"]["throughput"] / peer.best["web c1"]["throughput"]
    assert at_c1.value == pytest.approx(ratio) and at_c1.passed == (ratio >= 1 / 1.1)
    assert len(checked) == 3  # no c64 measured; /v2 uint8 has no peer of its kind here


def _stems(measured: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for figures in measured["best"].values():
        for name, label in figures["top1"].items():
            out.setdefault(Path(name).stem, label)
    return out


@pytest.mark.parametrize(
    ("fmt", "datatype", "shape"),
    [("oip-bytes", "BYTES", [1, 1]), ("oip-uint8", "UINT8", [1, 2, 2, 3])],
)
def test_oip_requests_are_byte_for_byte_what_tritonclient_sends(
    tmp_path: Path, fmt: str, datatype: str, shape: list[int]
) -> None:
    """The load generator's Triton requests against tritonclient's own encoder: the same JSON
    header and the same binary section (BYTES length-prefixed, UINT8 raw)."""
    payload = bytes(range(12))
    path = tmp_path / "x.bin"
    path.write_bytes(payload)
    upload = make_upload(path, fmt, "file", shape[1:])

    name = "encoded_image" if datatype == "BYTES" else "image"
    tensor = triton_http.InferInput(name, shape, datatype)
    if datatype == "BYTES":
        tensor.set_data_from_numpy(np.array([[payload]], dtype=np.object_), binary_data=True)
    else:
        tensor.set_data_from_numpy(np.frombuffer(payload, np.uint8).reshape(shape))
    outputs = [triton_http.InferRequestedOutput("labels", binary_data=False)]
    body, json_size = triton_http.InferenceServerClient.generate_request_body([tensor], outputs)

    n = upload.inference_header_length
    assert n is not None
    assert json.loads(upload.body[:n]) == json.loads(body[:json_size])
    assert upload.body[n:] == body[json_size:]


def test_top1_reads_every_servers_answer() -> None:
    ours = {"predictions": [{"index": 281, "label": "tabby", "score": 0.6}]}
    oip = {"outputs": [{"name": "labels", "datatype": "BYTES", "data": ["0.6:281:tabby, cat"]}]}
    torchserve = {"tabby": 0.6, "tiger cat": 0.3}  # TorchServe's image_classifier, best first
    litserve = ours  # its encode_response answers the service's shape
    # [ours]: BentoML's batchable one-item list
    for doc in (ours, [ours], oip, torchserve, litserve):
        label = _top1(json.dumps(doc).encode())
        assert label in {"tabby", "tabby, cat"}, doc
    assert _top1(b'{"error": "bad image"}') is None
    assert _top1(b"not json") is None
