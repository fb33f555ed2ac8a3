"""TorchServe with the ONNX graph: the built-in `image_classifier` handler (decode, batching,
softmax, top-5, labels) over the same .onnx as the service, loaded by TorchServe's own
`setup_ort_session` (a `--serialized-file` ending in .onnx). Two overrides, as TorchServe's
ONNX examples do: the base handler calls `self.model(data)`, which an onnxruntime session is
not, so `inference` runs the session; and the graph takes uint8 NHWC pixels (it normalizes
inside), so `image_processing` stops at resize + center crop (the weights' transform, from
`peer_model.json`).
"""

import json
from pathlib import Path

import torch
from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier

_PRE = json.loads((Path(__file__).parent / "peer_model.json").read_text())["preprocessing"]
_INTERPOLATION = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "nearest": transforms.InterpolationMode.NEAREST,
}


class PeerOnnxImageClassifier(ImageClassifier):
    topk = 5
    image_processing = transforms.Compose(
        [
            transforms.Resize(_PRE["resize_size"], _INTERPOLATION[_PRE["interpolation"]]),
            transforms.CenterCrop(_PRE["crop_size"]),
            transforms.PILToTensor(),  # uint8 CHW
        ]
    )

    def inference(self, data, *args, **kwargs):
        pixels = data.permute(0, 2, 3, 1).contiguous().numpy()  # uint8 NHWC, the graph's input
        return torch.from_numpy(self.model.run(["logits"], {"image": pixels})[0])
