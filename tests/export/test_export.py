"""The exported file honours docs/onnx-contract.md; parity failures remove it; fp16; --list."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model_export import verify as verify_module
from model_export.__main__ import main
from model_export.export import ExportError, export
from model_export.variants import VARIANTS
from model_export.verify import summary
from model_export.weights import load_model


def _metadata(path) -> dict:
    model = onnx.load(str(path))
    return json.loads({p.key: p.value for p in model.metadata_props}["efficientnet"])


def test_graph_honours_the_contract(lite0_onnx):
    model = onnx.load(str(lite0_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (image,), (logits,) = model.graph.input, model.graph.output
    assert (image.name, image.type.tensor_type.elem_type) == ("image", onnx.TensorProto.UINT8)
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == ["batch", 224, 224, 3]
    assert (logits.name, logits.type.tensor_type.elem_type) == ("logits", onnx.TensorProto.FLOAT)
    meta = _metadata(lite0_onnx)
    assert meta["schema_version"] == 1 and meta["family"] == "efficientnet-lite"
    assert len(meta["labels"]) == 1000 and meta["labels"][967] == "espresso"
    assert meta["preprocessing"] == {
        "resize_size": 256,
        "crop_size": 224,
        "interpolation": "bicubic",
        "mean": [0.498] * 3,
        "std": [0.502] * 3,
        "input_layout": "NHWC",
        "input_dtype": "uint8",
        "normalization_in_graph": True,
    }
    arch = meta["architecture"]
    assert arch["params"] == 4_652_008 and arch["padding"] == "tf_same" and arch["bn_eps"] == 1e-3
    assert 0.3 < arch["gflops"] < 0.45
    assert meta["weights"]["key_layout"] == "efficientnet_pytorch"
    assert meta["precision"] == "fp32" and meta["exporter"]["opset"] >= 17


def test_batch_axis_is_dynamic(b0_random_onnx):
    session = ort.InferenceSession(str(b0_random_onnx), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    (batch,) = session.run(["logits"], {"image": images})
    (single,) = session.run(["logits"], {"image": images[1:2]})
    assert batch.shape == (3, 1000) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1:2], single, atol=1e-5)


@pytest.fixture(scope="module")
def b0_random():
    torch.set_num_threads(2)
    return load_model(VARIANTS["b0"], "random", seed=0)


def test_b0_exports_in_under_a_minute(b0_random, tmp_path):
    start = time.perf_counter()
    result = export(*b0_random, tmp_path)
    assert time.perf_counter() - start < 60
    assert result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0
    print(f"b0 export {result.seconds:.1f}s, max |Δlogit| {result.max_abs_diff:.2e}")


def test_parity_failure_removes_the_file(b0_random, tmp_path, monkeypatch):
    # No real graph is bit-exact; nor may it fall back on PyTorch's own float32 error.
    monkeypatch.setattr(verify_module, "REL_BOUND", 0.0)
    monkeypatch.setattr(verify_module, "FLOAT32_SLACK", 0.0)
    with pytest.raises(ExportError, match="file removed"):
        export(*b0_random, tmp_path)
    assert not (tmp_path / "efficientnet_b0.onnx").exists()
    assert list(tmp_path.iterdir()) == []  # no half-written leftovers either


def test_failed_re_export_keeps_the_previous_graph(b0_random, tmp_path, monkeypatch):
    previous = tmp_path / "efficientnet_b0.onnx"
    previous.write_bytes(b"the graph a running service was exported with")
    monkeypatch.setattr(verify_module, "REL_BOUND", 0.0)
    monkeypatch.setattr(verify_module, "FLOAT32_SLACK", 0.0)
    with pytest.raises(ExportError, match="file removed"):
        export(*b0_random, tmp_path)
    assert previous.read_bytes() == b"the graph a running service was exported with"
    assert list(tmp_path.iterdir()) == [previous]


def test_a_graph_as_close_as_pytorch_float32_itself_is_not_refused(b0_random, tmp_path):
    """Over the fixed bound (here made 1e-12 so that any graph is), a graph is still right when
    PyTorch's own float32 forward is as far from the float64 truth: what is measured is said."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify_module, "REL_BOUND", 1e-12)
        result = export(*b0_random, tmp_path)
    check = result.metadata.verification
    assert check.float32_rel_error is not None and check.float32_rel_error > 0
    assert check.max_rel_error <= verify_module.FLOAT32_SLACK * check.float32_rel_error
    assert "PyTorch float32 itself" in summary(result.verification)


def test_fp16_keeps_the_boundary_and_the_top1(tmp_path, capsys):
    assert main(["--variant", "lite0", "--weights", "imagenet", "--fp16",
                 "--output-dir", str(tmp_path)]) == 0  # fmt: skip
    assert "top-1 agreement 100.0%" in capsys.readouterr().out
    path = tmp_path / "efficientnet_lite0.onnx"
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert _metadata(path)["precision"] == "fp16"


def test_list_prints_every_variant_from_the_real_graph():
    done = subprocess.run(
        [sys.executable, "-m", "model_export", "--list"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line}
    assert set(VARIANTS) <= set(rows)
    assert rows["b0"][4] == "5,288,548" and rows["b7"][4] == "66,347,960"
    assert 0.38 < float(rows["b0"][5]) < 0.40 and 36 < float(rows["b7"][5]) < 40
    assert float(rows["b0"][6]) == 1.0 and float(rows["b7"][6]) > 90  # ×B0
    assert "2^φ" in done.stdout
