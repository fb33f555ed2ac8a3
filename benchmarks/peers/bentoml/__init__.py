"""BentoML: one service, adaptive batching around an onnxruntime session."""
