"""Every weight source, both key layouts, and every way a load can go wrong."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from model_export.blocks import SameConv2d
from model_export.variants import VARIANTS, DownloadedWeights
from model_export.weights import OfflineError, WeightsError, layouts, load_model
from model_export.weights.published import download, packaged_file

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, no real network
B0 = VARIANTS["b0"]


@pytest.fixture(scope="module")
def b0_random():
    return load_model(B0, "random", seed=3)


@pytest.fixture(scope="module")
def b0_state(b0_random) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in b0_random[0].state_dict().items()}


def _save(state, path: Path) -> str:
    torch.save(state, path)
    return str(path)


def _same_weights(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items())


def test_random_is_seeded():
    a, info = load_model(B0, "random", seed=5)
    b, _ = load_model(B0, "random", seed=5)
    c, _ = load_model(B0, "random", seed=6)
    assert _same_weights(a, b.state_dict()) and not _same_weights(a, c.state_dict())
    assert info.seed == 5 and info.sha256 is None and info.preprocessing.crop_size == 224


def test_torchvision_layout_pth(b0_state, tmp_path):
    model, info = load_model(B0, _save(b0_state, tmp_path / "w.pth"))
    assert _same_weights(model, b0_state)
    assert (info.source, info.key_layout, model.style.padding) == (
        "file",
        "torchvision",
        "symmetric",
    )
    assert info.sha256 == hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()


def test_nested_checkpoint_with_dataparallel_prefix(b0_state, tmp_path):
    nested = {"state_dict": {f"module.{k}": v for k, v in b0_state.items()}, "epoch": 3}
    model, _ = load_model(B0, _save(nested, tmp_path / "ckpt.pt"))
    assert _same_weights(model, b0_state)


def test_safetensors(b0_state, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in b0_state.items()}, str(path))
    model, info = load_model(B0, str(path))
    assert _same_weights(model, b0_state) and info.key_layout == "torchvision"


def test_efficientnet_pytorch_layout_means_tf_padding_and_eps(b0_random, b0_state, tmp_path):
    renamed = layouts.to_layout(b0_state, b0_random[0], "efficientnet_pytorch")
    assert "_blocks.0._se_reduce.weight" in renamed and "_fc.weight" in renamed
    model, info = load_model(B0, _save(renamed, tmp_path / "ep.pth"))
    assert _same_weights(model, b0_state)
    assert info.key_layout == "efficientnet_pytorch"
    assert (model.style.padding, model.style.bn_eps) == ("tf_same", 1e-3)


def test_lite_packages_load_offline():
    for name in ("lite0", "lite1", "lite2"):
        model, info = load_model(VARIANTS[name], "imagenet")
        assert info.key_layout == "efficientnet_pytorch" and model.style.padding == "tf_same"
        assert info.sha256.startswith(VARIANTS[name].imagenet.file_name.split("-")[-1][:8])


def test_tf_same_padding_is_asymmetric_on_even_inputs():
    conv = SameConv2d(1, 1, 3, stride=2, padding=0, bias=False)
    x = torch.randn(1, 1, 8, 8)
    # TF: out = ceil(8/2) = 4, total pad 1, all of it bottom/right.
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    odd = torch.randn(1, 1, 9, 9)
    assert torch.equal(conv(odd), F.conv2d(odd, conv.weight, stride=2, padding=1))


# --- error paths ---------------------------------------------------------------------


def test_wrong_variant_names_the_right_one(b0_state, tmp_path):
    with pytest.raises(WeightsError, match="mismatches") as err:
        load_model(VARIANTS["b1"], _save(b0_state, tmp_path / "b0.pth"))
    assert "pass --variant b0" in str(err.value)


def test_wrong_variant_in_efficientnet_pytorch_layout():
    lite0 = packaged_file(VARIANTS["lite0"].imagenet)
    with pytest.raises(WeightsError, match="pass --variant lite0"):
        load_model(VARIANTS["lite1"], str(lite0))


def test_missing_keys_are_listed(b0_state, tmp_path):
    state = {k: v for k, v in b0_state.items() if k != "classifier.1.bias"}
    with pytest.raises(WeightsError, match=r"missing classifier\.1\.bias"):
        load_model(B0, _save(state, tmp_path / "w.pth"))


def test_unexpected_keys_are_listed(b0_state, tmp_path):
    state = {**b0_state, "extra.weight": torch.zeros(3)}
    with pytest.raises(WeightsError, match=r"unexpected extra\.weight"):
        load_model(B0, _save(state, tmp_path / "w.pth"))


def test_wrong_shapes_are_listed_and_nothing_is_loaded(b0_state, tmp_path):
    state = {**b0_state, "features.8.0.weight": torch.zeros(10, 320, 1, 1)}
    with pytest.raises(WeightsError, match=r"shape features\.8\.0\.weight: file \(10, 320"):
        load_model(B0, _save(state, tmp_path / "w.pth"))


def test_unknown_layout_and_bad_files(tmp_path):
    with pytest.raises(WeightsError, match="unknown key layout"):
        load_model(B0, _save({"conv.weight": torch.zeros(1)}, tmp_path / "x.pth"))
    (tmp_path / "w.txt").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unsupported file type"):
        load_model(B0, str(tmp_path / "w.txt"))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_model(B0, str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="not found"):
        load_model(B0, str(tmp_path / "absent.pth"))


@pytest.mark.parametrize("name", ["lite3", "lite4"])
def test_lite3_lite4_have_no_published_file(name):
    with pytest.raises(WeightsError, match="no published PyTorch ImageNet weights"):
        load_model(VARIANTS[name], "imagenet")


def test_corrupted_cached_file_is_refused(tmp_path):
    (tmp_path / B0.imagenet.file_name).write_bytes(b"truncated download")
    with pytest.raises(WeightsError, match=r"corrupt.*does not start with 3dd342df"):
        load_model(B0, "imagenet", cache_dir=tmp_path, base_url=UNREACHABLE)


def test_offline_error_names_url_cache_path_and_alternatives(tmp_path):
    with pytest.raises(OfflineError) as err:
        load_model(B0, "imagenet", cache_dir=tmp_path, base_url=UNREACHABLE)
    message = str(err.value)
    assert f"{UNREACHABLE}{B0.imagenet.file_name}" in message
    assert str(tmp_path / B0.imagenet.file_name) in message
    assert "--weights PATH" in message and "lite0" in message and "--weights random" in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_offline_cli_exits_2_with_one_line(tmp_path):
    env = {
        **os.environ,
        "EFFICIENTNET_WEIGHTS_CACHE": str(tmp_path / "cache"),
        "EFFICIENTNET_WEIGHTS_BASE_URL": UNREACHABLE,
    }
    cmd = [sys.executable, "-m", "model_export", "--variant", "b0", "--weights", "imagenet"]
    done = subprocess.run(
        [*cmd, "--output-dir", str(tmp_path / "out")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "127.0.0.1:9" in done.stderr and str(tmp_path / "cache") in done.stderr
    assert not (tmp_path / "out" / "efficientnet_b0.onnx").exists()


def test_download_verifies_hash_and_never_downloads_twice(b0_state, tmp_path):
    """A local HTTP server stands in for download.pytorch.org (no real network)."""
    served = tmp_path / "served"
    served.mkdir()
    blob = served / "tmp.pth"
    torch.save(b0_state, blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    name = f"efficientnet_b0_test-{digest[:8]}.pth"
    blob.rename(served / name)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    handler = functools.partial(Handler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        published = DownloadedWeights(name, B0.imagenet.preprocessing, 0.0, 0.0)
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        cache = tmp_path / "cache"
        first = download(published, cache, url)
        second = download(published, cache, url)
        bad = DownloadedWeights(name.replace(digest[:8], "00000000"), published.preprocessing, 0, 0)
        (served / bad.file_name).write_bytes((served / name).read_bytes())
        with pytest.raises(WeightsError, match="corrupt"):
            download(bad, cache, url)
    finally:
        server.shutdown()
    assert first == second == cache / name
    assert len(requests) == 2  # one for the good file (once), one for the bad one
    assert not (cache / bad.file_name).exists()  # a file failing its hash is never cached
