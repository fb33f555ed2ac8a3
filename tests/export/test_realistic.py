"""torchvision-layout checkpoints with realistic statistics export and pass the float64
photo verification (the noise-based check refused them); a wrong graph is refused; fp16
keeps its pooling in fp32 and B7 at 600 px stays finite with the fp32 top-1."""

from __future__ import annotations

import copy
import time

import numpy as np
import onnx
import pytest
import torch
import torchvision
from realistic import make_realistic

from model_export import export as export_module
from model_export.blocks import ConvStyle
from model_export.export import ExportError, export
from model_export.model import build_model
from model_export.photos import photo_batch
from model_export.variants import VARIANTS
from model_export.verify import FLOAT32_SLACK, graph_logits, reference_logits, summary
from model_export.weights import load_model

REL_BOUND = 1e-4


@pytest.fixture(scope="module")
def realistic_export(tmp_path_factory):
    """name → (torchvision reference, our model, info, fp32 export result); each built once."""
    torch.set_num_threads(2)
    cache: dict[str, tuple] = {}

    def get(name: str, seed: int = 3):
        if (name, seed) not in cache:
            start = time.perf_counter()
            directory = tmp_path_factory.mktemp(name)
            pre = VARIANTS[name].default_preprocessing()  # what a file checkpoint gets
            torch.manual_seed(seed)
            reference = getattr(torchvision.models, f"efficientnet_{name}")(weights=None)
            make_realistic(reference, pre, seed=seed + 1)
            torch.save(reference.state_dict(), directory / f"{name}.pth")
            ours, info = load_model(VARIANTS[name], str(directory / f"{name}.pth"))
            result = export(ours, info, directory)
            print(f"{name}: built, exported and verified in {time.perf_counter() - start:.0f}s")
            cache[name, seed] = (reference, ours, info, result)
        return cache[name, seed]

    return get


def _relative(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("name", ["b0", "b3", "b7"])
def test_realistic_torchvision_checkpoint_exports_and_matches_torchvision(realistic_export, name):
    reference, _, info, result = realistic_export(name)
    check = result.metadata.verification
    assert check.reference == "pytorch-float64" and check.images == 6
    assert check.max_rel_error <= REL_BOUND and check.top1_agreement == 1.0
    # Against the library itself: torchvision's own forward in float64 on the same photos.
    images = photo_batch(info.preprocessing)
    torchvision_logits = reference_logits(reference, info.preprocessing, images)
    assert np.abs(torchvision_logits).max() > 1.0  # realistic, not degenerate, logits
    got = graph_logits(result.path, images)
    relative = _relative(torchvision_logits, got)
    print(f"{name}: ONNX vs torchvision float64 on photos, max relative error {relative:.2e}")
    assert relative <= REL_BOUND
    assert (got.argmax(1) == torchvision_logits.argmax(1)).all()


def test_a_b7_checkpoint_over_the_fixed_bound_exports(realistic_export):
    """Another realistic B7, on which onnxruntime's error (1.6e-4 here) is over the fixed 1e-4
    bound, which refused it: PyTorch's own float32 forward is off by 5e-6, and within 250x that
    the graph is as right as float32 kernels make it. It matches torchvision's float64 forward
    just as closely, with the same top-1 on every photo."""
    reference, _, info, result = realistic_export("b7", seed=7)
    check = result.metadata.verification
    print(f"b7 seed 7: {summary(result.verification)}")
    if check.max_rel_error > REL_BOUND:
        assert check.float32_rel_error is not None
    allowed = max(REL_BOUND, FLOAT32_SLACK * (check.float32_rel_error or 0.0))
    images = photo_batch(info.preprocessing)
    torchvision_logits = reference_logits(reference, info.preprocessing, images)
    got = graph_logits(result.path, images)
    assert _relative(torchvision_logits, got) <= allowed
    assert (got.argmax(1) == torchvision_logits.argmax(1)).all()


def _perturbed(model, fp16):
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        weight = wrong.features[4][0].block[0][0].weight
        weight.mul_(1.002)  # one tensor, 0.2 % off: 1.4e-2 relative, 4,000x float32's error
    return wrong


def test_one_perturbed_weight_is_refused(realistic_export, tmp_path, monkeypatch):
    _, ours, info, _ = realistic_export("b0")
    monkeypatch.setattr(export_module, "graph_network", _perturbed)
    with pytest.raises(ExportError, match="disagrees with the float64 PyTorch reference"):
        export(ours, info, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_symmetric_padding_on_tf_trained_weights_is_refused(tmp_path, monkeypatch):
    """Lite0's published weights were trained in TensorFlow: a graph traced with PyTorch's
    symmetric padding computes something else, and must not pass."""
    ours, info = load_model(VARIANTS["lite0"], "imagenet")
    assert ours.style.padding == "tf_same"

    def symmetric(model, fp16):
        wrong = build_model(model.variant, ConvStyle(bn_eps=1e-3, activation="relu6"))
        wrong.load_state_dict(model.state_dict())
        return wrong

    monkeypatch.setattr(export_module, "graph_network", symmetric)
    with pytest.raises(ExportError, match="disagrees"):
        export(ours, info, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fp16_pools_in_fp32(realistic_export, tmp_path):
    _, ours, info, _ = realistic_export("b0")
    result = export(ours, info, tmp_path, fp16=True)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(result.path))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input)}
    types |= {i.name: i.data_type for i in graph.initializer}
    pools = [n for n in graph.node if n.op_type in ("GlobalAveragePool", "ReduceMean")]
    assert len(pools) == 17  # 16 SE layers + the head
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in pools)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    assert result.metadata.precision == "fp16"
    assert result.metadata.verification.reference == "pytorch-float64"


def test_b7_fp16_at_600px_stays_finite_with_the_fp32_top1(realistic_export, tmp_path):
    _, ours, info, fp32 = realistic_export("b7")
    start = time.perf_counter()
    result = export(ours, info, tmp_path, fp16=True)  # refuses non-finite logits itself
    images = photo_batch(info.preprocessing)
    half, full = graph_logits(result.path, images), graph_logits(fp32.path, images)
    print(f"b7 fp16 export + check {time.perf_counter() - start:.0f}s, {result.verification}")
    assert info.preprocessing.crop_size == 600
    assert np.isfinite(half).all()
    assert (half.argmax(1) == full.argmax(1)).all()
    assert result.metadata.verification.top1_agreement == 1.0
