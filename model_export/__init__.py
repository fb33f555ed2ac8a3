"""Build EfficientNet B0-B7 / Lite0-Lite4 in PyTorch and export verified ONNX graphs."""

# First, before anything imports onnxruntime: the service's telemetry opt-out applies to the
# exporter's verification session too (one definition, in service/telemetry.py).
from service import telemetry as telemetry

__version__ = "0.1.0"
