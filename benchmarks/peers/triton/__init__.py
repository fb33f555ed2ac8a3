"""NVIDIA Triton Inference Server through PyTriton (`nvidia-pytriton`)."""
