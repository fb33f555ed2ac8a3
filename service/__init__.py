"""EfficientNet image classification over HTTP: FastAPI + onnxruntime, no torch.

Everything the service knows about the model comes from the ``.onnx`` file
(see docs/onnx-contract.md).
"""

__version__ = "0.1.0"
