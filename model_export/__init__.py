"""Build any EfficientNet (B0-B8, L2, Lite0-Lite4) in PyTorch and export verified ONNX graphs."""

# First, before anything imports onnxruntime: the contract's telemetry opt-out applies to the
# exporter's verification session too (model_contract/telemetry.py).
from model_contract import telemetry as telemetry

__version__ = "0.1.0"
