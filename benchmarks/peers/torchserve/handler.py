"""TorchServe's built-in `image_classifier` handler with one change, the one its docs show
for another model: `image_processing` set to the transform these weights were trained with
(read from `peer_model.json`, which holds the .onnx file's own preprocessing metadata).

The built-in default (bilinear Resize(256), CenterCrop(224), ImageNet mean/std) is not what
EfficientNet-B0 (bicubic) or Lite0 (mean/std 0.498/0.502) expect; everything else — decode
with Pillow, batching, softmax, top-5, label mapping from index_to_name.json — is the
built-in handler's own code.
"""

import json
from pathlib import Path

from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier

_PRE = json.loads((Path(__file__).parent / "peer_model.json").read_text())["preprocessing"]
_INTERPOLATION = {
    "bicubic": transforms.InterpolationMode.BICUBIC,
    "bilinear": transforms.InterpolationMode.BILINEAR,
    "nearest": transforms.InterpolationMode.NEAREST,
}


class PeerImageClassifier(ImageClassifier):
    topk = 5
    image_processing = transforms.Compose(
        [
            transforms.Resize(_PRE["resize_size"], _INTERPOLATION[_PRE["interpolation"]]),
            transforms.CenterCrop(_PRE["crop_size"]),
            transforms.ToTensor(),
            transforms.Normalize(mean=_PRE["mean"], std=_PRE["std"]),
        ]
    )
