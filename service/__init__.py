"""EfficientNet image classification over HTTP: FastAPI + onnxruntime, no torch.

Everything the service knows about the model comes from the ``.onnx`` file
(see docs/onnx-contract.md).
"""

# First, before anything imports onnxruntime: its telemetry is switched off
# (model_contract/telemetry.py).
from model_contract import telemetry as telemetry

__version__ = "0.1.0"
