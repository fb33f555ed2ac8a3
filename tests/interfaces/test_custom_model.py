"""Your own classes, end to end: a fine-tuned 5-class torchvision EfficientNet-B0, exported by the
real CLI with its own labels and name, served by ``EFFICIENTNET_MODEL_PATH=D/flowers.onnx python -m
service`` (no EFFICIENTNET_VARIANT) as a real process, and used through every interface.

torch runs only in subprocesses (the checkpoint, the reference forward): the test process stays
torch-free, like the service.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from live_server import ROOT, Server, clean_env, running_server
from photos import Photo

from model_contract import Preprocessing
from service.pipeline.decode.image import preprocess

pytestmark = pytest.mark.slow  # a checkpoint, an export and a server: about a minute, shared
NAME = "flowers"
LABELS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
TIMEOUT_S = 300

# A "fine-tuned" checkpoint as a training script leaves it: torchvision's B0 with a 5-class head,
# BatchNorm statistics re-estimated on real photos (not the init's 0/1, with which every photo
# scores 0.2 per class; the kind the exporter's old noise-based check refused), the state dict
# inside a checkpoint dict beside other training state.
MAKE_CHECKPOINT = """
import sys, numpy as np, skimage.data, torch, torchvision
torch.manual_seed(0)
model = torchvision.models.efficientnet_b0(num_classes=5)
photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]
batch = torch.stack([
    torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1)[None].float() / 255,
        size=(224, 224), mode="bilinear", antialias=True)[0]
    for p in photos])
mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches seen
model.train()
with torch.no_grad():
    model((batch - mean) / std)
model.eval()
torch.save({"state_dict": model.state_dict(), "epoch": 12, "optimizer": {}}, sys.argv[1])
"""

# The truth for the served probabilities: torchvision's own forward of the same checkpoint, in
# float64, on the exact pixels the service computed (normalized with the file's mean/std).
REFERENCE = """
import json, sys, numpy as np, torch, torchvision
ckpt, pixels, mean, std = sys.argv[1], np.load(sys.argv[2]), *json.loads(sys.argv[3])
model = torchvision.models.efficientnet_b0(num_classes=5)
model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
model = model.double().eval()
x = torch.from_numpy(pixels).double().permute(0, 3, 1, 2) / 255
x = (x - torch.tensor(mean).double()[:, None, None]) / torch.tensor(std).double()[:, None, None]
with torch.no_grad():
    print(json.dumps(torch.softmax(model(x), dim=1).tolist()))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, f"{args[:3]} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done


@dataclass(frozen=True)
class Exported:
    checkpoint: Path
    onnx: Path
    export_output: str


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    work = tmp_path_factory.mktemp("flowers")
    checkpoint = work / "ckpt.pth"
    _python("-c", MAKE_CHECKPOINT, str(checkpoint))
    labels = work / "labels.txt"
    labels.write_text("".join(f"{label}\n" for label in LABELS))
    out = work / "D"
    done = _python(
        "-m", "model_export", "--variant", "b0", "--weights", str(checkpoint),
        "--labels", str(labels), "--name", NAME, "--output-dir", str(out),
    )  # fmt: skip
    assert (out / f"{NAME}.onnx").is_file(), sorted(p.name for p in out.iterdir())
    return Exported(checkpoint, out / f"{NAME}.onnx", done.stdout + done.stderr)


@pytest.fixture(scope="module")
def server(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = clean_env(EFFICIENTNET_MODEL_PATH=str(exported.onnx))
    assert "EFFICIENTNET_VARIANT" not in env  # the variant comes from the file
    log = tmp_path_factory.mktemp("flowers-server") / "server.log"
    with running_server(env, log, "--log-level", "warning") as server:
        yield server


def _classify(server: Server, photo: Photo, **params: int) -> httpx.Response:
    return httpx.post(
        f"{server.url}/classify",
        params=params,
        files={"file": (photo.path.name, photo.path.read_bytes(), "image/jpeg")},
        timeout=60,
    )


def _spec(server: Server) -> Preprocessing:
    meta = httpx.get(f"{server.url}/metadata", timeout=10).json()
    return Preprocessing.model_validate(meta["preprocessing"])


def test_classify_answers_with_the_five_names(server: Server, photos: dict[str, Photo]) -> None:
    for photo in photos.values():
        response = _classify(server, photo)  # default top_k (5) = every class here
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert sorted(p["label"] for p in predictions) == sorted(LABELS)
        assert all(LABELS[p["index"]] == p["label"] for p in predictions)
        scores = [p["score"] for p in predictions]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-6)
        assert response.json()["variant"] == "b0"


def test_the_served_probabilities_are_the_checkpoints_own(
    server: Server, exported: Exported, photos: dict[str, Photo], tmp_path: Path
) -> None:
    """Same numbers as torchvision's float64 forward, class by class: no label is shifted."""
    spec = _spec(server)
    names = ["chelsea", "coffee", "rocket"]
    pixels = np.stack([preprocess(photos[n].path.read_bytes(), spec, 50_000_000) for n in names])
    np.save(tmp_path / "pixels.npy", pixels)
    stats = json.dumps([list(spec.mean), list(spec.std)])
    reference = np.asarray(
        json.loads(
            _python(
                "-c", REFERENCE, str(exported.checkpoint), str(tmp_path / "pixels.npy"), stats
            ).stdout
        )
    )
    for row, name in zip(reference, names, strict=True):
        served = np.zeros(5)
        for p in _classify(server, photos[name]).json()["predictions"]:
            served[p["index"]] = p["score"]
        np.testing.assert_allclose(served, row, atol=1e-4)
        assert int(served.argmax()) == int(row.argmax())


def test_top_k_beyond_the_class_count_is_422_with_the_bound(
    server: Server, photos: dict[str, Photo]
) -> None:
    response = _classify(server, photos["chelsea"], top_k=6)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "5 classes" in error["message"] and "from 1 to 5" in error["message"]
    assert len(_classify(server, photos["chelsea"], top_k=5).json()["predictions"]) == 5
    batch = httpx.post(
        f"{server.url}/classify/batch",
        params={"top_k": 6},
        files=[("file", ("c.jpg", photos["chelsea"].path.read_bytes(), "image/jpeg"))],
        timeout=60,
    )
    assert batch.status_code == 422 and "from 1 to 5" in batch.json()["error"]["message"]


def test_metadata_names_the_model(server: Server) -> None:
    meta = httpx.get(f"{server.url}/metadata", timeout=10).json()
    assert meta["name"] == NAME and meta["variant"] == "b0" and meta["label_count"] == 5
    assert meta["weights"]["source"] != "imagenet"
    # What the exporter proved, passed through from the file.
    assert meta["verification"]["reference"] == "pytorch-float64"
    assert meta["verification"]["top1_agreement"] == 1.0


def test_oip_model_is_flowers_with_five_classes(server: Server) -> None:
    response = httpx.get(f"{server.url}/v2/models/{NAME}", timeout=10)
    assert response.status_code == 200, response.text
    meta = response.json()
    assert meta["name"] == NAME and meta["versions"] == ["1"]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    assert outputs["probabilities"] == ("FP32", [-1, 5])
    assert httpx.get(f"{server.url}/v2/models/{NAME}/ready", timeout=10).json()["ready"] is True
    stale = httpx.get(f"{server.url}/v2/models/efficientnet_b0", timeout=10)
    assert stale.status_code == 404 and f"'{NAME}'" in stale.json()["error"]


def test_tritonclient_inference(server: Server, photos: dict[str, Photo]) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
    try:
        assert client.is_model_ready(NAME)
        photo = photos["coffee"]
        tensor = triton.InferInput("encoded_image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([photo.path.read_bytes()], dtype=object))
        outputs = [
            triton.InferRequestedOutput("probabilities"),
            triton.InferRequestedOutput("labels", class_count=5),
        ]
        result = client.infer(NAME, [tensor], outputs=outputs)
    finally:
        client.close()
    assert result.get_response()["model_name"] == NAME
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 5)
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    labels = [e.decode().split(":", 2) for e in result.as_numpy("labels").ravel()]
    assert sorted(label for _, _, label in labels) == sorted(LABELS)
    best_score, best_index, best_label = labels[0]
    assert float(best_score) == pytest.approx(float(probabilities[0].max()), abs=1e-5)
    assert (
        int(best_index) == int(probabilities[0].argmax()) and best_label == LABELS[int(best_index)]
    )
    served = {p["index"]: p["score"] for p in _classify(server, photo).json()["predictions"]}
    np.testing.assert_allclose([served[i] for i in range(5)], probabilities[0], atol=1e-6)


def test_cli_prints_the_five_names(server: Server, photos: dict[str, Photo]) -> None:
    cli = [sys.executable, "-m", "efficientnet_client", "--url", server.url, "--no-progress"]
    photo = str(photos["chelsea"].path)
    done = subprocess.run(
        [*cli, "--json", photo],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert sorted(p["label"] for p in result["predictions"]) == sorted(LABELS)
    refused = subprocess.run(
        [*cli, "--top-k", "6", photo],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 4, refused.stderr  # the server refused: ExitCode.REJECTED
    assert "from 1 to 5" in refused.stderr
