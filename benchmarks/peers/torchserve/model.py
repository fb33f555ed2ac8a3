"""TorchServe's `--model-file`: the network class TorchServe instantiates (no arguments)
before loading `--serialized-file` (a state dict) into it, as its eager-mode docs show.

It is model_export's own EfficientNet (imported from the checkout on PYTHONPATH), built for
the variant and convolution style recorded next to it in `peer_model.json` (an extra file of
the archive), so the weights are exactly those of the .onnx under test.
"""

import json
from pathlib import Path

from model_export.blocks import ConvStyle
from model_export.model import EfficientNet
from model_export.variants import get_variant

_SPEC = json.loads((Path(__file__).parent / "peer_model.json").read_text())


class PeerEfficientNet(EfficientNet):
    def __init__(self) -> None:
        super().__init__(get_variant(_SPEC["variant"]), ConvStyle(**_SPEC["style"]))
        self.eval()
