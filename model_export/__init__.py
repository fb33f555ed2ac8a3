"""Build EfficientNet B0-B7 / Lite0-Lite4 in PyTorch and export verified ONNX graphs."""

__version__ = "0.1.0"
