"""LitServe: one LitAPI around an onnxruntime session, LitServe's own batching and workers."""
